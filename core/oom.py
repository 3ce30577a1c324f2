"""Out-of-memory and impossible sizes, as the engine's typed errors: whatever the allocator or the
device said, a job fails with ``out_of_memory`` (final: a retry would fail the same way) or, for a
size that cannot exist, ``bad_spec``."""

from __future__ import annotations

import torch

from core.errors import OutOfMemoryError, SpecError

# How an allocation that cannot be served reads (CPU allocator, MKL-DNN, HIP, MPS, CUDA drivers).
_OOM_MESSAGES = ("can't allocate memory", "not enough memory", "out of memory", "cannot allocate memory")
# How a size that cannot exist reads: arithmetic on the shapes overflowed, or went negative.
_SIZE_MESSAGES = (
    "numel overflow",
    "calculation overflowed",
    "negative dimension",
    "without overflow",
    "integer overflow",
    "too large to",
    "overflow when unpacking",
)


def translate_oom(error: BaseException) -> BaseException:
    """Out-of-memory errors (CUDA's, the CPU allocator's, Python's ``MemoryError``) become the
    engine's typed ``OutOfMemoryError``; impossible sizes (overflowed or negative) a ``SpecError``.
    Anything else is returned as it is."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, torch.OutOfMemoryError):
        return OutOfMemoryError(f"the device ran out of memory: {first}")
    if isinstance(error, MemoryError):
        return OutOfMemoryError(f"the host ran out of memory: {first}")
    text = str(error).lower()
    if isinstance(error, RuntimeError) and any(m in text for m in _OOM_MESSAGES):
        return OutOfMemoryError(f"the job ran out of memory: {first}")
    if isinstance(error, OverflowError) or (
        isinstance(error, RuntimeError | ValueError | TypeError) and any(m in text for m in _SIZE_MESSAGES)
    ):
        return SpecError(
            f"the job asks for a tensor too large to exist; make the model or data smaller ({first})"
        )
    return error
