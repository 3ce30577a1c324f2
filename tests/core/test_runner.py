"""Whole jobs on tiny data: the report, the artifacts, resume equivalence, cancellation, failures."""

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

from core.errors import CancelledError, DivergedError, SpecError
from core.export import verify_torchscript_accuracy
from core.report_model import Report
from core.runner import run_job
from core.sink import Progress, Sink
from core.spec import JobSpec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
TINY: dict[str, Any] = {
    "name": "tiny",
    "data": {"kind": "mnist1d", "train_limit": 400},
    "teacher": {"model": {"kind": "cnn1d", "channels": 8}, "train": {"epochs": 3, "batch_size": 50}},
    "student": {"model": {"kind": "mlp", "hidden": [16]}},
    "distill": {
        "losses": [{"kind": "kd", "weight": 0.7}, {"kind": "ce", "weight": 0.3}],
        "epochs": 4,
        "batch_size": 50,
    },
    "compress": [{"kind": "dynamic_int8"}, {"kind": "prune", "amount": 0.5}],
    "runtime": {"measure_speed": False},
}


def tiny(**changes: Any) -> JobSpec:
    return parse_spec({**TINY, **changes})


def run_tiny(out: Path, sink: Sink | None = None, **changes: Any) -> Report:
    return run_job(tiny(**changes), out, data_root=out, device="cpu", sink=sink)


class Recorder(Sink):
    def __init__(self, stop_at: tuple[str, int] | None = None) -> None:
        self.rows: list[tuple[str, int, int, dict[str, float]]] = []
        self.progress_seen: list[Progress] = []
        self.artifacts: dict[str, Path] = {}
        self.stop_at = stop_at

    def metrics(self, stage: str, epoch: int, step: int, values: dict[str, float]) -> None:
        self.rows.append((stage, epoch, step, values))

    def progress(self, progress: Progress) -> None:
        self.progress_seen.append(progress)

    def artifact(self, name: str, path: Path) -> None:
        self.artifacts[name] = path

    def should_stop(self) -> bool:
        return self.stop_at is not None and any((s, e) == self.stop_at for s, e, _, _ in self.rows)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report, Recorder]:
    out = tmp_path_factory.mktemp("job")
    sink = Recorder()
    report = run_job(tiny(), out, data_root=out / "data", device="cpu", sink=sink)
    return out, report, sink


MODEL_KEYS = ["test_top1", "test_top5", "test_ece", "test_nll", "params", "macs", "flops", "size_bytes"]


def test_report_has_the_promised_keys(finished: tuple[Path, Report, Recorder]) -> None:
    out, report, _ = finished
    written = json.loads((out / "report.json").read_text())
    assert written == report.model_dump(mode="json")
    assert list(written) == [
        "report_version", "name", "seed", "dataset", "teacher", "teachers", "baseline", "student",
        "transfer", "kd_gain", "kd_gain_stderr", "repeats", "verdict", "compression", "compressed",
        "candidates", "timing", "artifacts", "environment", "source_tasks",
    ]  # fmt: skip
    assert list(written["teacher"]) == [*MODEL_KEYS, "source", "best_epoch"]
    assert list(written["baseline"]) == [*MODEL_KEYS[:4], "agreement", *MODEL_KEYS[4:], "best_epoch"]
    assert list(written["student"]) == [
        *MODEL_KEYS[:4], "agreement", *MODEL_KEYS[4:], "best_epoch", "exported_torchscript_test_top1"
    ]  # fmt: skip
    assert set(written["timing"]) == {
        "teacher_s",
        "baseline_s",
        "distill_s",
        "distill_samples_per_s",
        "total_s",
    }
    assert report.baseline is not None and report.transfer is not None
    for entry in (report.teacher, report.baseline, report.student):
        assert 0.0 <= entry.test_top1 <= 1.0
    assert report.student.agreement is not None and 0 <= report.student.agreement <= 1
    assert report.kd_gain == pytest.approx(report.student.test_top1 - report.baseline.test_top1)
    assert report.timing.distill_samples_per_s > 0
    assert report.dataset.train_size == 400 and report.dataset.test_size == 1000
    assert report.verdict.startswith("distillation ")
    assert [c.kind for c in report.compressed] == ["dynamic_int8", "prune"]
    assert [c.name for c in report.candidates] == [
        "teacher", "baseline", "student", "student+dynamic_int8", "student+prune 50%"
    ]  # fmt: skip
    assert written["repeats"]["k"] == 1 and written["repeats"]["ci95_low"] is None
    assert "summary.md" in report.artifacts.values() and (out / "summary.md").read_text().startswith("# tiny")


def test_the_written_report_reads_back_typed_unchanged(finished: tuple[Path, Report, Recorder]) -> None:
    # what the API and the client do with a stored report: validate it, serve it again
    out, _, _ = finished
    written = json.loads((out / "report.json").read_text())
    assert Report.model_validate(written).model_dump(mode="json") == written


def test_artifacts_exist_and_the_exported_student_gives_the_reported_accuracy(
    finished: tuple[Path, Report, Recorder],
) -> None:
    from core.data import load_dataset

    out, report, sink = finished
    for name, rel in report.artifacts.items():
        assert (out / rel).is_file(), name
    assert set(sink.artifacts) >= {"student_torchscript", "student_onnx", "student_safetensors"}
    data = load_dataset(tiny().data, out / "data", seed=0)
    acc = verify_torchscript_accuracy(out / report.artifacts["student_torchscript"], data.test.x, data.test.y)
    assert acc == pytest.approx(report.student.test_top1)
    assert report.student.exported_torchscript_test_top1 == pytest.approx(acc)


def test_metrics_per_stage_and_epoch(finished: tuple[Path, Report, Recorder]) -> None:
    _, _, sink = finished
    keys = [(stage, epoch) for stage, epoch, _, _ in sink.rows]
    assert keys == [("teacher", e) for e in (1, 2, 3)] + [
        (s, e) for s in ("baseline", "student", "student.plain") for e in (1, 2, 3, 4)
    ]
    student = [values for stage, _, _, values in sink.rows if stage == "student"]
    assert {"train/loss", "train/kd", "train/ce", "val/top1", "val/top5", "lr", "samples_per_s"} <= set(
        student[0]
    )
    for values in student:  # the total is the weighted sum of the logged terms
        assert values["train/loss"] == pytest.approx(
            0.7 * values["train/kd"] + 0.3 * values["train/ce"], rel=1e-4
        )


def test_progress_is_monotone_and_ends_complete(finished: tuple[Path, Report, Recorder]) -> None:
    _, _, sink = finished
    fractions = [p.fraction for p in sink.progress_seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def _weights(out: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(out / "stages" / stage / "model.safetensors")


@pytest.mark.parametrize("stop_at", [("teacher", 1), ("student", 2)])
def test_resume_reaches_the_same_numbers(
    finished: tuple[Path, Report, Recorder], tmp_path: Path, stop_at: tuple[str, int]
) -> None:
    ref_out, ref, _ = finished
    out = tmp_path / "job"
    with pytest.raises(CancelledError):
        run_job(tiny(), out, data_root=tmp_path, device="cpu", sink=Recorder(stop_at=stop_at))
    assert not (out / "report.json").exists()
    assert (out / "stages" / stop_at[0] / "ckpt" / "last.pt").exists()
    sink = Recorder()
    report = run_job(tiny(), out, data_root=tmp_path, device="cpu", sink=sink)
    # the second run started the interrupted stage after its last checkpoint, not from scratch
    resumed = [(s, e) for s, e, _, _ in sink.rows if s == stop_at[0]]
    assert resumed[0][1] > 1
    for stage in ("teacher", "baseline", "student"):
        for name, tensor in _weights(ref_out, stage).items():
            assert torch.equal(tensor, _weights(out, stage)[name]), (stage, name)
    for who in ("teacher", "baseline", "student"):
        assert getattr(report, who).test_top1 == getattr(ref, who).test_top1


# A job that checks the host and takes a step checkpoint after every step, and kills itself
# (SIGKILL: no cleanup, no finally) in the middle of the student's second epoch.
KILLED_MID_EPOCH = """
import json, os, signal, sys
from pathlib import Path
import core.trainer
from core.runner import run_job
from core.sink import Sink
from core.spec import parse_spec

core.trainer.CHECK_EVERY_S = 0.0

class KillMidEpoch(Sink):
    def progress(self, p):
        if (p.stage, p.epoch, p.step) == ("student", 2, 5):
            os.kill(os.getpid(), signal.SIGKILL)

spec, out = parse_spec(json.loads(sys.argv[1])), Path(sys.argv[2])
run_job(spec, out, data_root=out, device="cpu", sink=KillMidEpoch())
"""


class Logs(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_a_job_killed_mid_epoch_resumes_from_its_step_checkpoint(
    finished: tuple[Path, Report, Recorder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref_out, ref, _ = finished
    out = tmp_path / "job"
    spec = {**TINY, "runtime": {**TINY["runtime"], "checkpoint_every_s": 0}}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_MID_EPOCH, json.dumps(spec), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ckpt = out / "stages" / "student" / "ckpt"
    assert (ckpt / "step.pt").exists()  # inside epoch 2: after step 5 (saved before step 5's progress)
    assert torch.load(ckpt / "last.pt", weights_only=True)["epoch"] == 1

    monkeypatch.setattr("core.trainer.CHECK_EVERY_S", 0.0)  # the same cadence: it changes no number
    sink = Logs()
    report = run_job(parse_spec(spec), out, data_root=out, device="cpu", sink=sink)
    assert "resumed student in epoch 2, after step 5 of 8" in sink.lines
    assert [e for s, e, _, _ in sink.rows if s == "student"] == [2, 3, 4]
    assert not (ckpt / "step.pt").exists()  # every epoch ended: nothing inside one is left
    # the same weights, bit for bit, as the uninterrupted run (which took no step checkpoint)
    for stage in ("teacher", "baseline", "student"):
        for name, tensor in _weights(ref_out, stage).items():
            assert torch.equal(tensor, _weights(out, stage)[name]), (stage, name)
    assert report.student.test_top1 == ref.student.test_top1


def test_cancellation_is_typed(tmp_path: Path) -> None:
    with pytest.raises(CancelledError) as info:
        run_job(tiny(), tmp_path, data_root=tmp_path, device="cpu", sink=Recorder(stop_at=("teacher", 1)))
    assert info.value.type == "cancelled"


def test_divergence_is_a_clear_failure(tmp_path: Path) -> None:
    spec = tiny(teacher={**TINY["teacher"], "train": {"epochs": 2, "optimizer": {"kind": "sgd", "lr": 1e30}}})
    with pytest.raises(DivergedError, match="stage 'teacher' diverged"):
        run_job(spec, tmp_path, data_root=tmp_path, device="cpu")


def test_an_output_directory_holds_one_job(finished: tuple[Path, Report, Recorder], tmp_path: Path) -> None:
    out, _, _ = finished
    with pytest.raises(SpecError, match="different spec"):
        run_job(tiny(seed=5), out, data_root=tmp_path, device="cpu")


def test_no_baseline_means_no_gain(tmp_path: Path) -> None:
    spec = tiny(baseline=False, export=["torchscript"], compress=[], distill={**TINY["distill"], "epochs": 1})
    report = run_job(spec, tmp_path, data_root=tmp_path, device="cpu")
    assert report.baseline is None and report.kd_gain is None
    assert "student_onnx" not in report.artifacts and "no labels-only baseline" in report.verdict
    assert [name for name, _ in report.models()] == ["teacher", "student"]
    assert "baseline_s" not in report.timing.stages


def test_unlabelled_pool_joins_the_transfer_set(tmp_path: Path) -> None:
    distill = {**TINY["distill"], "epochs": 1, "transfer": {"unlabelled": {"kind": "mnist1d", "seed": 7}}}
    sink = Recorder()
    run_tiny(tmp_path, sink, distill=distill, baseline=False, compress=[])
    result = json.loads((tmp_path / "stages" / "student" / "result.json").read_text())
    # 400 labelled + 3600 generated inputs (4000 minus the validation tenth), batches of 50
    assert result["history"][0]["samples_per_s"] > 0
    steps = [step for stage, _, step, _ in sink.rows if stage == "student"]
    assert steps == [(400 + 3600) // 50]


def test_unlabelled_pool_of_another_shape_is_refused(tmp_path: Path) -> None:
    distill = {**TINY["distill"], "transfer": {"unlabelled": {"kind": "digits"}}}
    with pytest.raises(SpecError, match="do not match"):
        run_job(tiny(distill=distill, baseline=False), tmp_path, data_root=tmp_path, device="cpu")


def test_a_trained_teacher_can_be_reused_as_a_checkpoint(
    finished: tuple[Path, Report, Recorder], tmp_path: Path
) -> None:
    ref_out, ref, _ = finished
    root = tmp_path / "root"
    (root / "teachers").mkdir(parents=True)
    (root / "teachers" / "t.safetensors").write_bytes(
        (ref_out / ref.artifacts["teacher_safetensors"]).read_bytes()
    )
    teacher = {**TINY["teacher"], "checkpoint": "teachers/t.safetensors"}
    sink = Recorder()
    report = run_job(
        tiny(teacher=teacher, baseline=False), tmp_path / "out", data_root=root, device="cpu", sink=sink
    )
    assert "teacher" not in {stage for stage, _, _, _ in sink.rows}  # not trained again
    assert report.teacher.source == "checkpoint" and report.teacher.best_epoch is None
    assert report.teacher.test_top1 == ref.teacher.test_top1


def test_a_torchscript_teacher_takes_raw_inputs(
    finished: tuple[Path, Report, Recorder], tmp_path: Path
) -> None:
    from core.data import load_dataset
    from core.models import build_classifier, load_weights

    ref_out, ref, _ = finished
    spec = tiny()
    data = load_dataset(spec.data, tmp_path, seed=0)
    model = build_classifier(spec.teacher.model, data, tmp_path)
    load_weights(model, ref_out / ref.artifacts["teacher_safetensors"])
    (tmp_path / "models").mkdir()
    torch.jit.trace(model.eval(), data.test.x[:4]).save(str(tmp_path / "models" / "teacher.pt"))
    teacher = {"model": {"kind": "torchscript", "path": "models/teacher.pt"}}
    report = run_job(
        tiny(teacher=teacher, baseline=False), tmp_path / "out", data_root=tmp_path, device="cpu"
    )
    assert report.teacher.source == "checkpoint"
    assert report.teacher.test_top1 == pytest.approx(ref.teacher.test_top1)
    assert report.student.agreement is not None and report.student.agreement > 0


def test_gradient_clipping_and_other_optimizers_run(tmp_path: Path) -> None:
    distill = {
        **TINY["distill"],
        "epochs": 2,
        "grad_clip_norm": 0.5,
        "optimizer": {"kind": "sgd", "lr": 0.05},
        "schedule": {"kind": "inverse_time", "decay_steps": 10},
        "select": "last",
    }
    sink = Recorder()
    run_tiny(tmp_path, sink, distill=distill, baseline=False, compress=[])
    lrs = [values["lr"] for stage, _, _, values in sink.rows if stage == "student"]
    steps = 400 // 50
    assert lrs == pytest.approx([0.05 / (1 + 0.05 * (e * steps - 1) / 10) for e in (1, 2)])


def test_a_compiled_job_trains_and_exports(tmp_path: Path) -> None:
    """``runtime.compile``: the stages train through ``torch.compile`` and the report is whole."""
    report = run_tiny(
        tmp_path,
        runtime={**TINY["runtime"], "compile": True},
        teacher={**TINY["teacher"], "train": {**TINY["teacher"]["train"], "epochs": 1}},
        distill={**TINY["distill"], "epochs": 1},
    )
    assert report.student.test_top1 > 0 and (tmp_path / "stages" / "student" / "model.safetensors").exists()


def test_the_transfer_set_is_kept_or_dropped_on_the_validation_split(
    finished: tuple[Path, Report, Recorder], tmp_path: Path
) -> None:
    out, report, sink = finished
    choice = report.transfer
    assert choice is not None  # the default: choose
    stages = {row[0] for row in sink.rows}
    assert {"student", "student.plain"} <= stages  # both trained, from the same initial weights
    results = {
        s: json.loads((out / "stages" / s / "result.json").read_text()) for s in ("student", "student.plain")
    }
    assert choice.val_top1_transfer == results["student"]["best_val_top1"]
    assert choice.val_top1_plain == results["student.plain"]["best_val_top1"]
    plain_wins = choice.val_top1_plain > choice.val_top1_transfer
    assert choice.stage == ("student.plain" if plain_wins else "student")
    assert report.student.best_epoch == results[choice.stage]["best_epoch"]

    # a transfer set of pure noise loses to the plain inputs; always: no second student
    noisy = {**TINY["distill"], "transfer": {"augment": [{"kind": "noise", "std": 50.0}]}}
    lost = run_tiny(tmp_path / "noisy", distill=noisy)
    assert lost.transfer is not None and lost.transfer.stage == "student.plain", lost.transfer
    assert lost.transfer.val_top1_plain > lost.transfer.val_top1_transfer
    kept = run_tiny(
        tmp_path / "always", distill={**noisy, "transfer": {**noisy["transfer"], "choose": "always"}}
    )
    assert kept.transfer is None and not (tmp_path / "always" / "stages" / "student.plain").exists()
