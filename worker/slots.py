"""What a worker host offers the pool: its GPUs, or some CPU slots on a machine without any.

``distill worker --gpus 0,1,2,3`` declares four GPUs (``--gpu N`` is the one-GPU form); without
GPUs, ``--slots N`` declares N CPU slots (default 1). The host runs one Celery worker with a
process per slot; the scheduler places each job on some of the slots and records their indices
on the job's row, and the child that runs it shows the engine exactly those GPUs. On a CPU host
the indices only number the slots: nothing is pinned. Torch-free: the worker's parent reads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slots:
    """The slot indices of a host: GPU indices as ``nvidia-smi`` numbers them (``gpus``), or the
    numbers 0..N-1 of CPU slots."""

    indices: tuple[int, ...]
    gpus: bool

    @classmethod
    def of(cls, gpus: str | None = None, slots: int | None = None) -> Slots:
        """From the command line's ``--gpus 0,1`` (or ``--gpu 0``) or ``--slots N``; ValueError if
        both are given or either is malformed."""
        if gpus is not None and slots is not None:
            raise ValueError("give either --gpus (this host's GPUs) or --slots (CPU slots), not both")
        if gpus is not None:
            return cls.of_gpus(gpus)
        return cls.cpu(1 if slots is None else slots)

    @classmethod
    def of_gpus(cls, text: str) -> Slots:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts or not all(p.isdigit() for p in parts):
            raise ValueError(f"--gpus takes GPU indices separated by commas, such as 0,1,2,3 (not {text!r})")
        indices = tuple(int(p) for p in parts)
        if len(set(indices)) != len(indices):
            raise ValueError(f"--gpus names a GPU twice: {text!r}")
        return cls(indices, gpus=True)

    @classmethod
    def cpu(cls, count: int = 1) -> Slots:
        if count < 1:
            raise ValueError(f"--slots must be at least 1 (not {count})")
        return cls(tuple(range(count)), gpus=False)

    @property
    def count(self) -> int:
        return len(self.indices)

    @property
    def label(self) -> str | None:
        """The GPUs as the node name shows them (``0,1``); None for CPU slots."""
        return ",".join(str(i) for i in self.indices) if self.gpus else None

    def visible(self, devices: list[int] | None) -> list[int] | None:
        """What the engine of a job placed on ``devices`` is shown (``CUDA_VISIBLE_DEVICES``): those
        GPUs, or None on a CPU host (nothing to pin)."""
        return list(devices) if self.gpus and devices else None
