"""How a run reports to whoever hosts it: progress, metrics, artifacts, and a stop request.

The CLI prints to the terminal; the worker writes to the database and reads cancellation from it.
The engine only ever talks to a ``Sink``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Progress:
    stage: str
    epoch: int
    epochs: int
    step: int
    steps: int
    fraction: float  # of the whole job, in [0, 1]
    eta_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Sink:
    """Receives what a run reports. Every method is optional: the base class ignores everything."""

    def progress(self, progress: Progress) -> None:
        """Called a few times a second at most, and at each epoch end."""

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        """One epoch's metrics; (stage, epoch, step, name) identifies each value."""

    def artifact(self, name: str, path: Path) -> None:
        """A file the run produced, ``name`` as the report uses it."""

    def log(self, message: str) -> None:
        """A line for humans."""

    def stage_done(self, stage: str) -> None:
        """A stage was trained; its weights and result are in ``stages/<stage>/`` of the output
        directory (written before this call), for a host that keeps finished stages to reuse."""

    def should_stop(self) -> bool:
        """Polled between steps; returning True cancels the run with ``CancelledError``."""
        return False
