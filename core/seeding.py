"""Seeds derived from (job seed, stage, purpose).

Each stage draws its randomness from seeds that depend only on the job's seed, the stage and the
epoch, and the global RNG is re-seeded at every epoch start. So a run resumed at epoch k draws
exactly what an uninterrupted run draws from epoch k on, and skipping a finished stage changes
nothing downstream: resume equivalence without saving RNG states.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *parts: object) -> int:
    text = ":".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
