"""Data-parallel jobs on the CPU: two gloo ranks against one process, and a kill inside an epoch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from core.errors import SpecError
from core.runner import run_job
from core.sink import Sink
from core.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]

# scikit-learn's digits: a real (small) image task with a clear signal; the same global batch
DIGITS: dict[str, Any] = {
    "seed": 2,
    "data": {"kind": "digits"},
    "teacher": {
        "model": {"kind": "cnn", "channels": [8, 16]},
        "train": {"epochs": 6, "batch_size": 64, "augment": []},
    },
    "student": {"model": {"kind": "mlp", "hidden": [32]}},
    "distill": {"epochs": 6, "batch_size": 64, "transfer": {"augment": []}},
    "export": ["safetensors"],
    "runtime": {"measure_speed": False},
}


class Logs(Sink):
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.epochs: list[tuple[str, int]] = []

    def log(self, message: str) -> None:
        self.lines.append(message)

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        self.epochs.append((stage, epoch))


def test_two_gloo_ranks_reach_the_accuracy_of_one_process(tmp_path: Path) -> None:
    one = run_job(parse_spec(DIGITS), tmp_path / "one", data_root=tmp_path, device="cpu")
    logs = Logs()
    spec = parse_spec({**DIGITS, "resources": {"gpus": 2}})
    two = run_job(spec, tmp_path / "two", data_root=tmp_path, device="cpu", sink=logs)
    assert any("data-parallel on 2 cpu devices (gloo)" in line for line in logs.lines)
    # each epoch's metrics once (rank 0 writes), for every stage
    assert logs.epochs == [(s, e) for s in ("teacher", "baseline", "student") for e in range(1, 7)]
    for who in ("teacher", "baseline", "student"):
        a, b = getattr(one, who).test_top1, getattr(two, who).test_top1
        assert abs(a - b) <= 0.03, (who, a, b)  # 360 test images: within noise
    assert two.student.test_top1 > 0.85
    assert not list((tmp_path / "two" / "tmp").glob("rank-*.error"))


def test_a_batch_the_ranks_cannot_share_equally_is_refused(tmp_path: Path) -> None:
    spec = parse_spec({**DIGITS, "resources": {"gpus": 3}})
    with pytest.raises(SpecError, match=r"distill.batch_size is 64: .* resources.gpus=3 .* multiple"):
        run_job(spec, tmp_path, data_root=tmp_path, device="cpu")


# Rank 0 takes a step checkpoint after every few steps and kills itself (SIGKILL: no cleanup) in
# the middle of the student's second epoch; its helper rank then loses its peer and ends.
KILLED = """
import json, os, signal, sys
from pathlib import Path
import core.trainer
from core.runner import run_job
from core.sink import Sink
from core.spec import parse_spec

class KillMidEpoch(Sink):
    def progress(self, p):
        if (p.stage, p.epoch, p.step) == ("student", 2, 16):
            os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    spec, out = parse_spec(json.loads(sys.argv[1])), Path(sys.argv[2])
    run_job(spec, out, data_root=out, device="cpu", sink=KillMidEpoch())
"""


def _student(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "stages" / "student" / "model.safetensors")


def test_a_data_parallel_job_killed_mid_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    spec: dict[str, Any] = {
        **DIGITS,
        "teacher": {**DIGITS["teacher"], "train": {**DIGITS["teacher"]["train"], "epochs": 2}},
        "distill": {**DIGITS["distill"], "epochs": 3},
        "resources": {"gpus": 2},
        "runtime": {"measure_speed": False, "checkpoint_every_s": 0},
    }
    whole = tmp_path / "whole"
    run_job(parse_spec(spec), whole, data_root=whole, device="cpu")

    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    out = tmp_path / "killed"
    killed = subprocess.run(
        [sys.executable, str(script), json.dumps(spec), str(out)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    step = torch.load(out / "stages" / "student" / "ckpt" / "step.pt", weights_only=True)
    assert step["position"]["epoch"] == 2 and 0 < step["position"]["step"] <= 16

    logs = Logs()
    run_job(parse_spec(spec), out, data_root=out, device="cpu", sink=logs)
    assert any(line.startswith("resumed student in epoch 2, after step") for line in logs.lines)
    resumed, reference = _student(out), _student(whole)
    for name, tensor in reference.items():
        assert torch.equal(tensor, resumed[name]), name
