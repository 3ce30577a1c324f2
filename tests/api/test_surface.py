"""The API's public surface is unchanged where nothing was meant to change.

``surface.json`` is the transcript of ``tests/api/surface.py`` recorded on the code before the
service side was reshaped into the jobs domain (issue 11). Each request's status, the headers a
client reads and the body must be as recorded; a deliberate change re-records the file
(``python -m tests.api.surface > tests/api/surface.json``) in the same commit, so that the diff
shows what moved.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.api.surface import transcript

RECORDED = Path(__file__).with_name("surface.json")


def test_every_answer_is_as_recorded() -> None:
    recorded = json.loads(RECORDED.read_text())
    now = transcript()
    assert [e["label"] for e in now] == [e["label"] for e in recorded]
    changed = [
        (before["label"], before, after)
        for before, after in zip(recorded, now, strict=True)
        if before != after
    ]
    assert not changed, "\n\n".join(
        f"{label}:\n  recorded {json.dumps(before, sort_keys=True)}\n"
        f"  now      {json.dumps(after, sort_keys=True)}"
        for label, before, after in changed[:5]
    )
