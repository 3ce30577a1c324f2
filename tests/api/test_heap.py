"""A serving API process settles its garbage collector (api.heap); an app made elsewhere does not.
Each probe runs in a fresh interpreter: the test process's own collector is left as it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from api.heap import YOUNG_THRESHOLD

PROBE = """
import gc, json
from api import app
before = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}
getattr(app, FACTORY)()
after = {"threshold": gc.get_threshold()[0], "frozen": gc.get_freeze_count()}
print(json.dumps({"before": before, "after": after}))
"""


def _probe(factory: str, home: Path) -> dict[str, dict[str, int]]:
    code = PROBE.replace("FACTORY", repr(factory))
    env = {"DISTILLERY_HOME": str(home), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_served_app_freezes_start_up_and_widens_the_young_generation(tmp_path: Path) -> None:
    seen = _probe("create_served_app", tmp_path)
    assert seen["before"] == {"threshold": 700, "frozen": 0}
    assert seen["after"]["threshold"] == YOUNG_THRESHOLD
    assert seen["after"]["frozen"] > 10_000  # the application and its imports


def test_an_app_made_in_a_test_keeps_the_interpreters_defaults(tmp_path: Path) -> None:
    assert _probe("create_app", tmp_path)["after"] == {"threshold": 700, "frozen": 0}
