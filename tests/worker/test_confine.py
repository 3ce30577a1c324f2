"""The engine process's confinement (Linux Landlock): what a job can and cannot touch.

A probe process confines itself with a job's policy, as the engine process does, then tries
what a hostile teacher would; the last test runs a real job confined, end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.sink import Progress, Sink
from tests.service import TINY_JOB
from worker.confine import abi
from worker.engine_process import child_env, run_engine_process

pytestmark = pytest.mark.skipif(abi() < 1, reason="this kernel has no Landlock")

PROBE = r"""
import json, os, socket, sys
from pathlib import Path
from worker.confine import confine, policy_for

out, data, upload, secret, port = sys.argv[1:6]
print(confine(policy_for(Path(out), Path(data), [Path(upload)])), file=sys.stderr)

def attempt(what, action):
    try:
        action()
        return "ok"
    except OSError as e:
        return type(e).__name__

def connect():
    with socket.create_connection(("127.0.0.1", int(port)), timeout=3):
        pass

results = {
    "read /etc/passwd": attempt("", lambda: open("/etc/passwd").read()),
    "read the service's files": attempt("", lambda: open(secret).read()),
    "list the data root's uploads": attempt("", lambda: os.listdir(Path(data) / "uploads")),
    "read another upload": attempt("", lambda: open(Path(data) / "uploads" / "theirs.npz").read()),
    "read its own upload": attempt("", lambda: open(upload).read()),
    "read a shared dataset": attempt("", lambda: open(Path(data) / "shared" / "set.txt").read()),
    "write in its directory": attempt("", lambda: (Path(out) / "ckpt").write_text("x")),
    "write beside it": attempt("", lambda: (Path(out).parent / "escape").write_text("x")),
    "write in /tmp": attempt("", lambda: open("/tmp/distillery-escape", "w").write("x")),
    "write the data root": attempt("", lambda: (Path(data) / "shared" / "new").write_text("x")),
    "connect over TCP": attempt("", connect),
    "import numpy": attempt("", lambda: __import__("numpy")),
}
print(json.dumps(results))
"""


def test_a_confined_process_reaches_its_inputs_and_directory_only(tmp_path: Path) -> None:
    out, data = tmp_path / "work" / "job", tmp_path / "data"
    (out / "tmp").mkdir(parents=True)
    (data / "uploads").mkdir(parents=True)
    (data / "shared").mkdir()
    (data / "shared" / "set.txt").write_text("a shared dataset")
    (data / "uploads" / "mine.npz").write_text("my upload")
    (data / "uploads" / "theirs.npz").write_text("another team's upload")
    secret = tmp_path / "distillery.db"
    secret.write_text("every team's rows")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, str(out), str(data), str(data / "uploads" / "mine.npz"),
             str(secret), str(port)],
            capture_output=True, text=True, timeout=120, env=child_env(out / "tmp"), cwd=out,
        )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    results: dict[str, Any] = json.loads(probe.stdout.splitlines()[-1])
    allowed = {"read its own upload", "read a shared dataset", "write in its directory", "import numpy"}
    assert {k for k, v in results.items() if v == "ok"} == allowed, results
    assert results["read /etc/passwd"] == "PermissionError"
    assert results["read the service's files"] == "PermissionError"
    if abi() >= 4:
        assert results["connect over TCP"] == "PermissionError"
    assert not (out.parent / "escape").exists() and not (data / "shared" / "new").exists()


def test_the_child_environment_carries_no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DISTILLERY_DATABASE_URL", "postgresql://u:secret@db/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    env = child_env(tmp_path)
    assert "secret" not in json.dumps(env)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["TMPDIR"] == str(tmp_path)
    # the GPUs the scheduler placed the job on replace what the worker sees
    assert child_env(tmp_path, [2, 3])["CUDA_VISIBLE_DEVICES"] == "2,3"


class Recorder(Sink):
    def __init__(self, out: Path | None = None) -> None:
        self.out = out
        self.logs: list[str] = []
        self.epochs: list[tuple[str, int]] = []
        self.stages: set[str] = set()
        self.checkpointed: list[int] = []  # the stage's checkpoint epoch when its metrics arrived

    def progress(self, progress: Progress) -> None:
        self.stages.add(progress.stage)

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        self.epochs.append((stage, epoch))
        if self.out is not None:
            import torch

            last = self.out / "stages" / stage / "ckpt" / "last.pt"
            saved = torch.load(last, weights_only=False)["epoch"] if last.exists() else 0
            self.checkpointed.append(epoch - saved)

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.mark.slow
def test_a_job_runs_confined_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "job"
    sink = Recorder(out)
    report = run_engine_process(
        TINY_JOB, out, data_root=tmp_path / "data", device="cpu", sink=sink, sandbox="required"
    )
    assert sink.logs[0].startswith("Landlock ABI")
    assert report["student"]["test_top1"] > 0.15  # above chance (10 classes) after a few epochs
    assert ("student", TINY_JOB["distill"]["epochs"]) in sink.epochs
    # the engine waits for the sink to have an epoch's metrics before it checkpoints that epoch
    assert sink.checkpointed and set(sink.checkpointed) == {1}
    assert report["artifacts"] and all((out / rel).is_file() for rel in report["artifacts"].values())
