"""Job error messages without the server's layout.

An engine error often names a file ("no such file: /srv/distillery/data/x.npz"); the message is
shown to the job's team, who named ``x.npz`` relative to the data root and have no business
knowing where the service keeps its data, its jobs or its Python. Each known folder becomes a
short placeholder (``<data>/x.npz``, ``<job>/checkpoints``); the most specific folder wins.
"""

from __future__ import annotations

import contextlib
import re
import site
import sys
import sysconfig
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from store.settings import Settings

_APP = Path(__file__).resolve().parents[1]  # the service's own source tree
# A folder matches only as a whole path segment: /home/ann must not eat /home/anna.
_END = r"(?=[/\\\s'\",:;)\]}]|$)"


def _forms(path: Path | str) -> set[str]:
    """A folder as messages may spell it: as configured, and with its links resolved."""
    text = str(path)
    forms = {text.rstrip("/") or text}
    with contextlib.suppress(OSError, RuntimeError):
        forms.add(str(Path(text).expanduser().resolve()))
    return {f for f in forms if len(f) > 1}  # never "/" alone


@cache
def _python_folders() -> tuple[tuple[str, str], ...]:
    paths = sysconfig.get_paths()
    folders = [(p, "<site-packages>") for p in (*site.getsitepackages(), paths["purelib"], paths["platlib"])]
    folders += [(paths["stdlib"], "<python>"), (sys.prefix, "<python>"), (sys.base_prefix, "<python>")]
    return tuple(folders)


def _folders(settings: Settings, job_dir: Path) -> Iterable[tuple[str, str]]:
    yield str(job_dir), "<job>"
    yield str(settings.work_path), "<work>"
    artifacts = settings.artifacts_location
    if "://" not in artifacts:
        yield artifacts, "<artifacts>"
    yield str(settings.data_path), "<data>"
    yield str(settings.resolved_home()), "<home>"
    yield from _python_folders()
    yield str(_APP), "<app>"
    yield str(Path.home()), "~"


def redact(message: str, settings: Settings, job_dir: Path) -> str:
    """``message`` with every server folder replaced by its placeholder."""
    pairs: dict[str, str] = {}
    for folder, label in _folders(settings, job_dir):  # in order: the first label for a folder wins
        for form in _forms(folder):
            pairs.setdefault(form, label)
    for form in sorted(pairs, key=len, reverse=True):  # longest first: the most specific wins
        message = re.sub(re.escape(form) + _END, pairs[form], message)  # labels hold no backslash
    return message
