"""Dataset archives for the upload and format tests: a good one, and one per way to be wrong."""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np


def npz_bytes(**changes: Any) -> bytes:
    rng = np.random.default_rng(0)
    arrays: dict[str, Any] = {
        "x_train": rng.integers(0, 256, (30, 6, 6), dtype=np.uint8),
        "y_train": np.arange(30) % 3,
        "x_test": rng.integers(0, 256, (9, 6, 6), dtype=np.uint8),
        "y_test": np.arange(9) % 3,
    }
    arrays.update(changes)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v for k, v in arrays.items() if v is not None})
    return buffer.getvalue()


BAD_NPZ: dict[str, tuple[bytes, str, str]] = {
    "missing": (npz_bytes(y_test=None), "y_test", "lacks array(s) y_test"),
    "lengths": (npz_bytes(y_train=np.arange(29) % 3), "y_train", "x_train has 30 rows but y_train has 29"),
    "object": (npz_bytes(x_test=np.array([1, "a"], dtype=object)), "x_test", "object array"),
    "nan": (npz_bytes(x_test=np.full((9, 6, 6), np.nan)), "x_test", "NaN or infinite"),
    "negative": (npz_bytes(y_test=np.arange(9) % 3 - 1), "y_test", "negative labels"),
    "huge label": (npz_bytes(y_test=np.full(9, 10**9)), "y_test", "class indices below"),
    "shapes": (npz_bytes(x_test=np.zeros((9, 1, 7, 6), np.uint8)), "x_test", "share one sample shape"),
    "float labels": (npz_bytes(y_train=np.zeros(30)), "y_train", "1-D integer array"),
    "rank 5": (npz_bytes(x_train=np.zeros((30, 1, 1, 6, 6))), "x_train", "expected (N, L) signals"),
    "channels last": (
        npz_bytes(x_train=np.zeros((30, 32, 32, 3), np.uint8), x_test=np.zeros((9, 32, 32, 3), np.uint8)),
        "x_train",
        "channels-last",
    ),
    "one class": (npz_bytes(y_train=np.zeros(30, int), y_test=np.zeros(9, int)), "y_train", "two classes"),
    "val half": (npz_bytes(x_val=np.zeros((2, 6, 6), np.uint8)), "y_val", "give both x_val and y_val"),
    "pickle": (pickle.dumps({"x_train": [1, 2, 3]}), "file", "pickled content is never loaded"),
}
