"""One distillation job, start to finish: teachers, labels-only baseline, student, report, exports.

Everything a job writes goes under its output directory: ``stages/<stage>/`` holds each stage's
checkpoints and, once the stage is over, its weights and result; running the same spec over the
same directory again skips finished stages and resumes the unfinished one from its last epoch.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.augment import build_augmenter
from core.compress import MaskHold, prunable_count, prune_to_count
from core.data import load_dataset, load_inputs
from core.data.base import DataSplits
from core.data.loading import memory_budget as default_budget
from core.data.samples import Samples
from core.distributed import SINGLE, Launch, Ranks, check_parallel, rank_device, world_size
from core.errors import CancelledError, SpecError
from core.evaluate import count_params
from core.files import atomic_write_text
from core.losses import Objective, SourceConsistencyTerm
from core.models import build_classifier, load_weights, save_weights
from core.oom import translate_oom
from core.repeats import repeat_seed, repeat_stage
from core.report import RepeatRun, StageOutputs, build_report, test_top1, write_report
from core.report_model import Report, SourceTask, TransferChoice
from core.seeding import derive_seed, seed_everything
from core.sink import Sink
from core.spec import CELoss, JobSpec, SourceConsistencyLoss, TeacherCompress, TeacherSpec
from core.stagekeys import teacher_stage
from core.trainer import ProgressTracker, StagePlan, StageResult, TrainData, Trainer, evaluate_split

PLAIN_STUDENT = "student.plain"  # distilled on the plain training inputs, to choose the transfer set by
STUDENT_COST = 2.0  # a distillation step also runs the teachers: roughly twice a plain step
PRUNED_TEACHER = "teacher_pruned"  # the stage that fine-tunes the teacher pruned to the student's size


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"device {name!r} was asked for, but CUDA is not available here")
    return device


def one_hot(y: Tensor, classes: int) -> Tensor:
    return F.one_hot(y, classes).float()


class JobRun:
    def __init__(
        self,
        spec: JobSpec,
        out_dir: Path,
        data_root: Path,
        device: torch.device,
        sink: Sink,
        memory_budget: int | None = None,
        *,
        ranks: Ranks = SINGLE,
    ) -> None:
        self.spec, self.out, self.data_root, self.device, self.sink = spec, out_dir, data_root, device, sink
        self.ranks = ranks
        self.memory_budget = default_budget() if memory_budget is None else memory_budget
        self.stages_dir = out_dir / "stages"
        self.results: dict[str, StageResult] = {}
        self.timing: dict[str, float] = {}

    # ---------------------------------------------------------------- set-up

    def _claim_out_dir(self) -> None:
        """Refuse to mix two different jobs in one directory; remember the spec for resumes."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "spec.json"
        if path.exists() and not self._same_spec(json.loads(path.read_text())):
            raise SpecError(f"{self.out} holds the output of a different spec; choose another --out")
        atomic_write_text(path, self.spec.model_dump_json(indent=2))

    def _same_spec(self, stored: Any) -> bool:
        """Whether ``spec.json`` of an earlier run is this spec: read as a spec, so that one written
        before a field was added (with its default meant) still resumes."""
        try:
            return JobSpec.model_validate(stored) == self.spec
        except ValueError:
            return False

    def _load_data(self, spec: Any) -> DataSplits:
        """The dataset, its tensors on the device (streamed inputs stay where they are)."""
        data = load_dataset(spec, self.data_root, self.spec.seed, self.memory_budget)
        for split in (data.train, data.val, data.test):
            split.x, split.y = split.x.to(self.device), split.y.to(self.device)
        if data.loader is not None:
            self.sink.log(f"data {data.name}: {data.loader.mode} ({data.loader.reason})")
        return data

    def _stage_weights(self, data: DataSplits, teacher_share: float) -> dict[str, float]:
        s = self.spec
        steps = max(1, len(data.train) // s.distill.batch_size)
        weights: dict[str, float] = {}
        for i, t in enumerate(s.all_teachers):
            if t.needs_training:
                weights[teacher_stage(i)] = t.train.epochs * max(1, len(data.train) // t.train.batch_size)
        for r in range(s.repeats):  # in the order they run: each baseline before its student
            if s.baseline.enabled:
                weights[repeat_stage("baseline", r)] = s.distill.epochs * steps
            weights[repeat_stage("student", r)] = s.distill.epochs * steps * (1 + teacher_share)
            if r == 0 and self._chooses_transfer():
                weights[PLAIN_STUDENT] = weights["student"]
        if (cfg := self._teacher_compress()) is not None and cfg.prune and cfg.fine_tune:
            weights[PRUNED_TEACHER] = s.distill.epochs * steps
        weights["evaluate"] = 0.05 * sum(weights.values())
        return weights

    def _chooses_transfer(self) -> bool:
        """Whether the student is also distilled on the plain inputs, to choose on validation."""
        t = self.spec.distill.transfer
        return t.choose == "auto" and bool(t.augment or t.unlabelled)

    def _teacher_compress(self) -> TeacherCompress | None:
        return next((c for c in self.spec.compress if isinstance(c, TeacherCompress)), None)

    # ---------------------------------------------------------------- stages

    def _stage(
        self,
        name: str,
        model: nn.Module,
        objective: Objective,
        plan: StagePlan,
        train: TrainData,
        val: DataSplits,
        augment: Any = None,
    ) -> StageResult:
        """Run one stage, or pick up its result if an earlier run finished it."""
        stage_dir = self.stages_dir / name
        done = stage_dir / "result.json"
        weights = stage_dir / "model.safetensors"
        if done.exists() and weights.exists():
            load_weights(model, weights)
            result = StageResult(**json.loads(done.read_text()))
            self.sink.log(f"stage {name}: already done, reusing its weights")
        else:
            self.sink.log(f"stage {name}: {plan.epochs} epochs on {len(train)} samples")
            fwd = cast(nn.Module, torch.compile(model)) if self.spec.runtime.compile else None
            first = train.x[:2].to(self.device).float()
            objective.prepare(model, first, one_hot(train.labels[:2], train.classes))
            result = self.trainer.fit(
                plan, model, objective, train, (val.val.x, val.val.y), stage_dir / "ckpt", augment, fwd
            )
            if self.ranks.main:
                save_weights(model, weights)
                atomic_write_text(
                    done, json.dumps(asdict(result))
                )  # the stage's done marker: never half-written
                self.sink.stage_done(name)
            self.ranks.barrier()
        objective.close()
        model.eval()
        self.results[name] = result
        return result

    def _teacher(self, index: int, tspec: TeacherSpec) -> tuple[nn.Module, DataSplits]:
        tdata = self.data if tspec.data is None else self._load_data(tspec.data)
        name = teacher_stage(index)
        seed_everything(derive_seed(self.spec.seed, name, "init"))
        model = self._place(build_classifier(tspec.model, tdata, self.data_root, tspec.checkpoint), tdata)
        if tspec.needs_training:
            if tspec.from_job is not None and not (self.stages_dir / name / "result.json").exists():
                raise SpecError(
                    f"teacher.from_job: the teacher of job {tspec.from_job} is kept by the service; "
                    "run this spec there, or give the teacher's weights as `checkpoint`"
                )
            tr = tspec.train
            plan = StagePlan(
                name, tr.epochs, tr.batch_size, tr.optimizer, tr.schedule, tr.grad_clip_norm, tr.select
            )
            objective = Objective([CELoss(label_smoothing=tr.label_smoothing)], model, [])
            train = TrainData(tdata.train.x, tdata.train.y, tdata.num_classes)
            self._stage(name, model, objective, plan, train, tdata, build_augmenter(tr.augment, tdata))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model, tdata

    def _student_model(self, repeat: int = 0) -> nn.Module:
        # baseline and student start from the same initial weights: the comparison isolates the recipe
        seed_everything(repeat_seed(self.spec.seed, repeat))
        return self._place(build_classifier(self.spec.student.model, self.data, self.data_root), self.data)

    def _place(self, model: nn.Module, data: DataSplits) -> nn.Module:
        """On the device; conv nets on CUDA in channels-last layout, which tensor cores prefer."""
        if self.device.type == "cuda" and data.is_image:
            return model.to(self.device).to(memory_format=torch.channels_last)
        return model.to(self.device)

    def _plan(self, stage: str) -> StagePlan:
        d = self.spec.distill
        return StagePlan(stage, d.epochs, d.batch_size, d.optimizer, d.schedule, d.grad_clip_norm, d.select)

    def _transfer_set(self, teachers: list[nn.Module]) -> TrainData:
        """Training inputs with their labels, plus the unlabelled pool labelled by the teachers' ensemble."""
        x, y = self.data.train.x, self.data.train.y
        pool_spec = self.spec.distill.transfer.unlabelled
        if pool_spec is None:
            return TrainData(x, y, self.data.num_classes)
        if isinstance(x, Samples):
            raise SpecError(
                "distill.transfer.unlabelled: the job's dataset streams (data.loader), and a "
                "teacher-labelled pool is only added to data held in memory; set data.loader.mode "
                "to memory or drop the pool"
            )
        pool = load_inputs(pool_spec, self.data_root, self.spec.seed)
        pool = self._in_memory(pool, "distill.transfer.unlabelled")
        if tuple(pool.shape[1:]) != tuple(x.shape[1:]):
            raise SpecError(
                f"distill.transfer.unlabelled: inputs of shape {tuple(pool.shape[1:])} do not match "
                f"the data's {tuple(x.shape[1:])}"
            )
        with torch.inference_mode():
            logits = torch.stack(
                [torch.cat([t(pool[i : i + 1000]) for i in range(0, len(pool), 1000)]) for t in teachers]
            ).mean(0)
        self.sink.log(f"transfer set: {len(x)} labelled + {len(pool)} teacher-labelled inputs")
        return TrainData(
            torch.cat([x, pool.to(x.dtype)]), torch.cat([y, logits.argmax(1)]), self.data.num_classes
        )

    def _in_memory(self, x: Tensor | Samples, what: str) -> Tensor:
        """Inputs a loss or the transfer set holds whole, on the device."""
        if isinstance(x, Samples):
            if len(x) * x.row_bytes > self.memory_budget:
                raise SpecError(f"{what}: its inputs exceed the memory budget and it cannot stream")
            x = x.materialize()
        return x.to(self.device)

    def _baseline(self, augment: Any, repeat: int = 0) -> nn.Module:
        """The student's architecture trained on labels alone, with the same budget."""
        t0 = time.monotonic()
        baseline = self._student_model(repeat)
        objective = Objective([CELoss()], baseline, [])
        train = TrainData(self.data.train.x, self.data.train.y, self.data.num_classes)
        augment = augment if self.spec.baseline.augment else None
        stage = repeat_stage("baseline", repeat)
        self._stage(stage, baseline, objective, self._plan(stage), train, self.data, augment)
        if repeat == 0:
            self.timing["baseline_s"] = time.monotonic() - t0
        return baseline

    def _distilled(
        self,
        teachers: list[nn.Module],
        train: TrainData,
        augment: Any,
        repeat: int = 0,
        name: str = "student",
    ) -> nn.Module:
        """The student distilled from ``teachers`` on the transfer set ``train`` (stage ``name``)."""
        d = self.spec.distill
        student = self._student_model(repeat)
        objective = Objective(d.losses, student, teachers)
        for term in objective.terms:
            if isinstance(term, SourceConsistencyTerm):
                src = self._in_memory(
                    load_inputs(term.spec.source, self.data_root, self.spec.seed), "distill.losses source"
                )
                term.attach_source(src, d.batch_size)
        stage = repeat_stage(name, repeat)
        self._stage(stage, student, objective, self._plan(stage), train, self.data, augment)
        return student

    def _choose_transfer(
        self, teachers: list[nn.Module], student: nn.Module
    ) -> tuple[nn.Module, TransferChoice | None]:
        """The student again on the plain training inputs, and whichever of the two validates
        better (ties keep the transfer set)."""
        if not self._chooses_transfer():
            return student, None
        plain_data = TrainData(self.data.train.x, self.data.train.y, self.data.num_classes)
        plain = self._distilled(teachers, plain_data, None, name=PLAIN_STUDENT)
        with_set, without = self.results["student"].best_val_top1, self.results[PLAIN_STUDENT].best_val_top1
        choice = TransferChoice(
            chosen="training inputs" if without > with_set else "transfer set",
            stage=PLAIN_STUDENT if without > with_set else "student",
            val_top1_transfer=with_set,
            val_top1_plain=without,
        )
        self.sink.log(
            f"transfer set: validation top-1 {with_set:.4f} with it, {without:.4f} on the plain inputs; "
            f"keeping the student on the {choice.chosen}"
        )
        return (plain if choice.stage == PLAIN_STUDENT else student), choice

    def _repeats(
        self, teachers: list[nn.Module], train: TrainData, augment: Any, choice: TransferChoice | None
    ) -> list[RepeatRun]:
        """The baseline/student pairs after the first (``repeats``), each from its own shared seed,
        the student on what the first repeat chose; only their test top-1s are kept."""
        runs, t0 = [], time.monotonic()
        bs = self.spec.runtime.eval_batch_size
        plain = choice is not None and choice.stage == PLAIN_STUDENT
        student_train = (
            TrainData(self.data.train.x, self.data.train.y, self.data.num_classes) if plain else train
        )
        for r in range(1, self.spec.repeats):
            baseline = self._baseline(augment, r)
            student = self._distilled(teachers, student_train, None if plain else augment, r)
            if self.ranks.main:
                b, s = (test_top1(m, self.data, bs, self.device) for m in (baseline, student))
                runs.append(RepeatRun(r, repeat_seed(self.spec.seed, r), b, s))
        if self.spec.repeats > 1:
            self.timing["repeats_s"] = time.monotonic() - t0
        return runs

    def _check_teacher_prunable(self) -> None:
        """Before any training: the student must be smaller than the teacher it is set against."""
        cfg = self._teacher_compress()
        if cfg is None or not cfg.prune:
            return
        tspec = self.spec.teacher
        # building draws initial weights from the global generator: harmless, every stage reseeds it
        teacher = build_classifier(tspec.model, self.data, self.data_root, tspec.checkpoint)
        teacher_n = count_params(teacher)
        student_n = count_params(build_classifier(self.spec.student.model, self.data, self.data_root))
        _, others = prunable_count(teacher)
        if not others < student_n < teacher_n:
            raise SpecError(
                f"compress.{self.spec.compress.index(cfg)}: the teacher ({teacher_n:,} parameters, "
                f"{others:,} of them not prunable) cannot be pruned to the student's {student_n:,}; "
                "set prune: false"
            )

    def _pruned_teacher(self, teacher: nn.Module, cfg: TeacherCompress, augment: Any) -> nn.Module:
        """The teacher pruned to the student's parameter count, then (``fine_tune``) trained on
        labels with the student's budget, its pruned weights held at zero: stage ``teacher_pruned``."""
        t0 = time.monotonic()
        model = prune_to_count(teacher, count_params(self._student_model()))
        if cfg.fine_tune:
            model.requires_grad_(True)
            hold = MaskHold(model)
            objective = Objective([CELoss()], model, [])
            train = TrainData(self.data.train.x, self.data.train.y, self.data.num_classes)
            augment = augment if self.spec.baseline.augment else None
            plan = self._plan(PRUNED_TEACHER)
            self._stage(PRUNED_TEACHER, model, objective, plan, train, self.data, augment)
            hold.close()
            self.timing[f"{PRUNED_TEACHER}_s"] = time.monotonic() - t0
        model.requires_grad_(False)
        return model.eval()

    def run(self) -> Report | None:
        """The job's stages, then (rank 0) its report; a helper rank returns None."""
        t_start = time.monotonic()
        if self.ranks.main:
            self._claim_out_dir()
        self.data = self._load_data(self.spec.data)
        d = self.spec.distill
        n_teacher_fwd = len(self.spec.all_teachers)
        tracker = ProgressTracker(self._stage_weights(self.data, 0.5 * n_teacher_fwd), self.sink)
        self.trainer = Trainer(
            self.device,
            self.sink,
            tracker,
            precision=self.spec.runtime.precision,
            eval_batch_size=self.spec.runtime.eval_batch_size,
            seed=self.spec.seed,
            checkpoint_every_s=self.spec.runtime.checkpoint_every_s,
            ranks=self.ranks,
        )
        self._check_teacher_prunable()
        teachers, teacher_data = [], []
        for i, tspec in enumerate(self.spec.all_teachers):
            t0 = time.monotonic()
            model, tdata = self._teacher(i, tspec)
            teachers.append(model)
            teacher_data.append(tdata)
            self.timing[f"{teacher_stage(i)}_s"] = time.monotonic() - t0

        augment = build_augmenter(d.transfer.augment, self.data)
        baseline = self._baseline(augment) if self.spec.baseline.enabled else None

        t0 = time.monotonic()
        train = self._transfer_set(teachers)
        student = self._distilled(teachers, train, augment)
        student, choice = self._choose_transfer(teachers, student)
        self.timing["distill_s"] = time.monotonic() - t0
        repeats = self._repeats(teachers, train, augment, choice)
        cfg = self._teacher_compress()
        pruned = self._pruned_teacher(teachers[0], cfg, augment) if cfg is not None and cfg.prune else None

        if not self.ranks.main:
            return None  # rank 0 evaluates, exports and reports
        tracker.report("evaluate", 1, 1, 0, 1)
        stages = StageOutputs(
            data=self.data,
            teachers=teachers,
            teacher_data=teacher_data,
            baseline=baseline,
            student=student,
            results=self.results,
            timing=self.timing,
            started=t_start,
            source_tasks=self._source_tasks(teachers, baseline, student),
            repeats=repeats,
            teacher_pruned=pruned,
            transfer=choice,
        )
        report = build_report(self.spec, self.out, stages, self.device, self.sink)
        write_report(report, self.out)
        tracker.report("evaluate", 1, 1, 1, 1)
        return report

    def _source_tasks(
        self, teachers: list[nn.Module], baseline: nn.Module | None, student: nn.Module
    ) -> list[SourceTask]:
        """For transfer learning: how much of the source task each model keeps (its test top-1)."""
        rows = []
        for i, loss in enumerate(self.spec.distill.losses):
            if not isinstance(loss, SourceConsistencyLoss):
                continue
            src = self._load_data(loss.source)
            models = {"teacher": teachers[loss.teacher], "baseline": baseline, "student": student}
            row: dict[str, Any] = {"loss": i, "dataset": loss.source.kind}
            for who, model in models.items():
                if model is not None:
                    top1 = evaluate_split(model, src.test.x, src.test.y, self.spec.runtime.eval_batch_size)[
                        "top1"
                    ]
                    row[f"{who}_top1"] = round(top1, 6)
            rows.append(SourceTask.model_validate(row))
        return rows


def run_job(
    spec: JobSpec,
    out_dir: Path,
    *,
    data_root: Path,
    device: str = "auto",
    sink: Sink | None = None,
    memory_budget: int | None = None,
) -> Report:
    """Run (or resume) a job; returns the report that is also written to ``out_dir/report.json``.

    ``memory_budget``: bytes of decoded data held in memory before a dataset streams
    (default ``core.data.loading.memory_budget()``: ``DISTILLERY_DATA_MEMORY_BYTES`` or a quarter
    of the machine's memory). ``resources.gpus`` above 1 runs the job data-parallel in that many
    processes (``core.distributed``), this one being rank 0."""
    base, sink = pick_device(device), sink or Sink()
    check_parallel(spec, base)
    world = world_size(spec)
    launch, ranks, threads = None, SINGLE, torch.get_num_threads()
    try:
        if world > 1:
            if base.type == "cpu":  # the ranks share the CPUs
                torch.set_num_threads(max(1, threads // world))
            request = {
                "spec": spec.model_dump(mode="json"),
                "out_dir": str(Path(out_dir).resolve()),
                "data_root": str(Path(data_root).resolve()),
                "device": base.type,
                "memory_budget": memory_budget,
            }
            launch, ranks = Launch(request, world), Ranks(0, world)
            backend = "NCCL" if base.type == "cuda" else "gloo"
            sink.log(f"data-parallel on {world} {base.type} devices ({backend}), this process rank 0")
        run = JobRun(spec, out_dir, data_root, rank_device(base, 0), sink, memory_budget, ranks=ranks)
        report = run.run()
    except BaseException as e:
        helper = launch.helper_error() if launch is not None and not isinstance(e, CancelledError) else None
        if launch is not None:
            launch.close(failed=True)
        if helper is not None:  # rank 0 failed because a helper rank did: that rank's error
            raise helper from e
        typed = translate_oom(e) if isinstance(e, Exception) else e
        if typed is e:
            raise
        raise typed from e
    finally:
        torch.set_num_threads(threads)
    if launch is not None:
        launch.close(failed=False)
    assert report is not None  # rank 0 always reports
    return report
