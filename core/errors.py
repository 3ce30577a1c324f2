"""The engine's exception hierarchy.

Every failure a job can meet maps to one ``DistilleryError`` subclass, whose ``type`` is the
stable identifier the service stores in a job's ``error.type`` (DESIGN.md §4).
"""

from __future__ import annotations


class DistilleryError(Exception):
    """Base of every error the engine raises on purpose."""

    type = "internal"


class SpecError(DistilleryError):
    """The job spec is invalid or asks for something that cannot be built."""

    type = "bad_spec"


class DataMissingError(DistilleryError):
    """A dataset or checkpoint the spec names is not where it should be."""

    type = "data_missing"


class DivergedError(DistilleryError):
    """Training produced a NaN or infinite loss."""

    type = "diverged"


class OutOfMemoryError(DistilleryError):
    """The device ran out of memory."""

    type = "out_of_memory"


class CancelledError(DistilleryError):
    """The sink asked the run to stop."""

    type = "cancelled"


class UnsafeModelError(DistilleryError):
    """A model file calls an operator outside the allowlist of pure tensor operators (core.opcheck)."""

    type = "unsafe_model"
