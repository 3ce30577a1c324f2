"""Seeds derived from (job seed, stage, purpose).

Each stage draws its randomness from seeds that depend only on the job's seed, the stage and the
epoch, and the global RNG is re-seeded at every epoch start. So a run resumed at epoch k draws
exactly what an uninterrupted run draws from epoch k on, and skipping a finished stage changes
nothing downstream: resume equivalence at epoch boundaries without saving RNG states. A step
checkpoint, taken inside an epoch, saves them (``rng_state``) and puts them back on resume.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def derive_seed(seed: int, *parts: object) -> int:
    text = ":".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """Every global generator's state (Python, NumPy, torch's CPU and CUDA ones), in types a
    ``weights_only`` checkpoint holds: to resume a run mid-epoch exactly where it stopped."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
