"""A hand-made report with every key the engine writes (docs/report.md), for tests that need one
without running a job: the API's and the CLI's."""

from __future__ import annotations

import copy
from typing import Any

_MODEL: dict[str, Any] = {
    "test_top1": 0.5,
    "test_top5": 0.9,
    "test_ece": 0.03,
    "test_nll": 1.2,
    "params": 1000,
    "macs": 2000,
    "flops": 4000,
    "size_bytes": 4000,
}

REPORT: dict[str, Any] = {
    "report_version": 1,
    "name": "tiny",
    "seed": 0,
    "dataset": {
        "kind": "mnist1d",
        "num_classes": 10,
        "input_shape": [40],
        "train_size": 400,
        "val_size": 40,
        "test_size": 1000,
    },
    "teacher": {**_MODEL, "test_top1": 0.97, "params": 28298, "source": "trained", "best_epoch": 3},
    "teachers": [],
    "baseline": {**_MODEL, "test_top1": 0.632, "agreement": 0.64, "best_epoch": 4},
    "student": {
        **_MODEL,
        "test_top1": 0.855,
        "agreement": 0.86,
        "latency_ms_cpu_b1": 0.03,
        "throughput_cpu_per_s": 90000.0,
        "best_epoch": 41,
        "exported_torchscript_test_top1": 0.855,
    },
    "kd_gain": 0.223,
    "kd_gain_stderr": 0.019,
    "verdict": "distillation helped: student 0.8550 vs labels-only baseline 0.6320",
    "compression": {
        "params_ratio": 1.9,
        "macs_ratio": 12.9,
        "size_ratio": None,
        "latency_speedup_cpu": None,
        "throughput_speedup_cpu": None,
    },
    "compressed": [
        {
            "kind": "dynamic_int8",
            "params_nonzero": 1000,
            "sparsity": 0.0,
            "size_bytes": 9,
            "note": "1 Linear layer(s) quantized to int8 (dynamic)",
            "test_top1": 0.85,
            "top1_change": -0.005,
        }
    ],
    "timing": {
        "teacher_s": 3.5,
        "baseline_s": 2.0,
        "distill_s": 4.0,
        "distill_samples_per_s": 1000.0,
        "total_s": 43.2,
    },
    "artifacts": {
        "student_torchscript": "student.torchscript.pt",
        "report": "report.json",
        "summary": "summary.md",
    },
    "environment": {
        "device": "cpu",
        "torch": "2.9.0",
        "distillery": "0.1.0",
        "python": "3.11.9",
        "cpu_threads": 2,
    },
    "source_tasks": [],
}


def report(**changes: Any) -> dict[str, Any]:
    """A deep copy of ``REPORT`` with top-level keys replaced (``None`` values included)."""
    return {**copy.deepcopy(REPORT), **changes}
