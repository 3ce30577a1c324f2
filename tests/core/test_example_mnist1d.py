"""The promised result: ``distill run examples/mnist1d.yaml`` on this machine's CPU.

Runs the real command (about 5 minutes) and checks the accuracy bar:
teacher >= 0.92, student >= 0.88, KD gain >= +0.08 (measured on this machine: student 0.902
and 0.918 in two runs whose thread counts, and with them the float sums, differed; 0.88 leaves
the test split's noise, about 0.01, twice over); then evaluates the exported TorchScript file
independently, on the test split regenerated straight from the ``mnist1d`` package. The time it
took is printed, not asserted: speed is measured by `make demo` and benchmarks, not unit tests.

The job runs on one intra-op thread (``OMP_NUM_THREADS=1``): on 2 idle cores it takes as long
with one as with two (4 min 49 s and 4 min 42 s, measured back to back; the models are too small
for a second thread to help), and with two, any other load on the machine stalls both at every
parallel region: a fresh-clone ``make test`` beside a profiler and a benchmark ran past the
20-minute timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.export import load_exported_torchscript

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_mnist1d_example_meets_the_bar(tmp_path: Path) -> None:
    distill = Path(sys.executable).with_name("distill")
    start = time.monotonic()
    env = {**os.environ, "DISTILLERY_DATA_ROOT": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            str(distill),
            "run",
            str(ROOT / "examples" / "mnist1d.yaml"),
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "-q",
        ],
        check=True,
        env=env,
        timeout=1200,
    )
    elapsed = time.monotonic() - start
    report = json.loads((tmp_path / "report.json").read_text())
    summary = (
        f"teacher {report['teacher']['test_top1']}, student {report['student']['test_top1']}, "
        f"baseline {report['baseline']['test_top1']}, gain {report['kd_gain']}, {elapsed:.0f} s"
    )
    print(summary)
    assert report["teacher"]["test_top1"] >= 0.92, summary
    assert report["student"]["test_top1"] >= 0.88, summary
    assert report["kd_gain"] >= 0.08, summary

    from mnist1d.data import get_dataset_args, make_dataset

    data = make_dataset(get_dataset_args())
    x = torch.tensor(data["x_test"], dtype=torch.float32)
    y = torch.tensor(data["y_test"])
    model = load_exported_torchscript(tmp_path / report["artifacts"]["student_torchscript"])
    with torch.inference_mode():
        accuracy = (model(x).argmax(1) == y).double().mean().item()
    assert accuracy == pytest.approx(report["student"]["test_top1"], abs=1e-9)
