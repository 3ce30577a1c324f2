"""What a job will cost, from its spec alone: parameters, memory, dataset bytes, work per epoch.

Importable without torch (the API refuses oversized specs with it before storing them). The
formulas follow the shapes of ``core.models`` and ``core.data``; they are estimates, checked
against the real modules by tests/core/test_estimate.py: parameter counts exact, activations
within 2x. Activations are what autograd keeps for the backward pass, counted in float32 (bf16
autocast on GPUs only lowers them); teachers run in inference mode and keep none. Every number
is a Python int, so an absurd spec gives an absurd number, never an overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from core.netcost import NetCost, cost_of
from core.spec import (
    CNN1DModel,
    DigitsData,
    ImageFolderData,
    JobSpec,
    MLPModel,
    MNIST1DData,
    NpzData,
    SourceConsistencyLoss,
    SyntheticData,
    TeacherCompress,
    TorchvisionData,
)

FLOAT: Final = 4  # bytes of a float32 parameter, gradient, optimizer slot or activation
TRAIN_FACTOR: Final = 3  # forward + backward (about twice the forward) in multiply-accumulates
UNKNOWN_CLASSES: Final = 100  # an image folder's class count is only known once it is read


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DataShape:
    """What the estimate needs of a dataset; ``None`` counts are unknown until the data is read."""

    input_shape: tuple[int, ...]
    num_classes: int
    train: int | None
    test: int | None
    itemsize: int  # bytes of one input value as loaded (uint8 images 1, float32 signals 4)
    has_val: bool = False  # the source ships its own validation split
    shape_known: bool = True  # False: a minimal shape stands in, every figure is a lower bound


_TORCHVISION: Final[dict[str, DataShape]] = {
    "mnist": DataShape((1, 28, 28), 10, 60_000, 10_000, 1),
    "fashion_mnist": DataShape((1, 28, 28), 10, 60_000, 10_000, 1),
    "cifar10": DataShape((3, 32, 32), 10, 50_000, 10_000, 1),
    "cifar100": DataShape((3, 32, 32), 100, 50_000, 10_000, 1),
    "svhn": DataShape((3, 32, 32), 10, 73_257, 26_032, 1),
}
_DIGITS_ROWS: Final = 1797
_ITEMSIZE: Final = {"uint8": 1}  # an archive's other dtypes are loaded as float32


def data_shape(spec: Any, uploads: dict[str, dict[str, Any]] | None = None) -> DataShape:
    """The shape of a dataset spec; ``uploads`` maps an archive's path to its upload summary."""
    if isinstance(spec, MNIST1DData):
        return DataShape((40,), 10, 4000, 1000, FLOAT)  # the mnist1d package's default generator
    if isinstance(spec, DigitsData):
        test = math.ceil(_DIGITS_ROWS * spec.test_fraction)  # as scikit-learn's train_test_split
        return DataShape((1, 8, 8), 10, _DIGITS_ROWS - test, test, FLOAT)
    if isinstance(spec, SyntheticData):
        shape = (spec.channels, spec.size, spec.size)
        return DataShape(shape, spec.num_classes, spec.train_size, spec.test_size, 1)
    if isinstance(spec, TorchvisionData):
        return _TORCHVISION[spec.kind]
    if isinstance(spec, ImageFolderData):
        shape = (spec.channels, spec.image_size, spec.image_size)
        return DataShape(shape, UNKNOWN_CLASSES, spec.train_limit, None, 1)
    summary = (uploads or {}).get(spec.path) if isinstance(spec, NpzData) else None
    if summary:
        return DataShape(
            tuple(int(d) for d in summary["input_shape"]),
            int(summary["num_classes"]),
            int(summary["train_size"]),
            int(summary["test_size"]) + int(summary.get("val_size") or 0),
            _ITEMSIZE.get(str(summary.get("dtype")), FLOAT),
            has_val=summary.get("val_size") is not None,
        )
    return DataShape((1,), 2, None, None, FLOAT, shape_known=False)


def train_rows(spec: Any, shape: DataShape) -> int | None:
    """Training rows after the validation split and ``train_limit`` (as core.data.loading)."""
    rows = shape.train
    if rows is not None and not shape.has_val and spec.val_fraction > 0:
        rows -= min(max(1, round(rows * spec.val_fraction)), max(rows - 1, 0))
    if spec.train_limit is not None:
        rows = spec.train_limit if rows is None else min(rows, spec.train_limit)
    return rows


def dataset_bytes(shape: DataShape) -> int | None:
    """Inputs (and int64 labels) of every split, as loaded in memory (and on the device)."""
    if shape.train is None:
        return None
    rows = shape.train + (shape.test or 0)
    return rows * (math.prod(shape.input_shape) * shape.itemsize + 8)


def net_cost(model: Any, shape: DataShape) -> NetCost | None:
    """The cost of an architecture on a dataset; None when it cannot read that data or is unknown."""
    dims = shape.input_shape
    if not shape.shape_known:
        dims = (1,) if isinstance(model, MLPModel | CNN1DModel) else (1, 1, 1)
    return cost_of(model, dims, shape.num_classes)


# ---------------------------------------------------------------- the job


@dataclass(frozen=True)
class ModelEstimate:
    field: str  # where the spec describes it: "student.model", "teachers.0.model"
    kind: str
    params: int | None
    macs: int | None  # forward multiply-accumulates per sample
    kept: int | None  # floats kept for backward per sample, when trained
    size_field: str  # the field named when the model is too big
    lower_bound: bool = False  # the data's shape is unknown: at least this much


@dataclass(frozen=True)
class StageEstimate:
    """One training stage: the model it trains, with what it holds on the device meanwhile."""

    name: str
    model: ModelEstimate
    batch_field: str
    batch_size: int
    optimizer_slots: int  # per parameter: Adam 2, SGD with momentum 1
    samples: int | None  # rows per epoch
    frozen_params: int = 0  # the teachers' weights, in inference mode: no gradients, no activations
    frozen_macs: int = 0  # the teachers' forward passes per sample
    extra_rows_per_sample: Fraction = Fraction(0)  # source-consistency rows run beside each sample

    @property
    def weight_bytes(self) -> int:
        params = self.model.params or 0
        return FLOAT * (params * (2 + self.optimizer_slots) + self.frozen_params)

    @property
    def activation_bytes(self) -> int:
        rows = self.batch_size + math.ceil(self.batch_size * self.extra_rows_per_sample)
        return FLOAT * (self.model.kept or 0) * rows

    @property
    def memory(self) -> int:
        """Parameters, gradients, optimizer state and activations at the stage's batch size."""
        return self.weight_bytes + self.activation_bytes

    @property
    def epoch_work(self) -> int | None:
        if self.samples is None or self.model.macs is None:
            return None
        per_sample = TRAIN_FACTOR * self.model.macs + self.frozen_macs
        return math.ceil(self.samples * per_sample * (1 + self.extra_rows_per_sample))


@dataclass(frozen=True)
class DatasetEstimate:
    field: str
    kind: str
    bytes: int | None
    train_rows: int | None
    size_field: str
    lower_bound: bool = False


@dataclass(frozen=True)
class JobEstimate:
    models: list[ModelEstimate]
    stages: list[StageEstimate]
    datasets: list[DatasetEstimate]

    @property
    def peak_memory(self) -> int:
        return max((s.memory for s in self.stages), default=0)

    def summary(self) -> list[str]:
        """Human-readable lines (``distill validate`` prints them)."""
        lines = []
        for m in self.models:
            at_least = "at least " if m.lower_bound else ""
            params = "unknown" if m.params is None else f"{at_least}{sci(m.params)}"
            macs = "" if m.macs is None else f", {at_least}{sci(m.macs)} MACs per sample"
            lines.append(f"{m.field} ({m.kind}): {params} parameters{macs}")
        for d in self.datasets:
            size = "unknown size" if d.bytes is None else f"{sci(d.bytes)} bytes"
            rows = "" if d.train_rows is None else f", {sci(d.train_rows)} training rows"
            lines.append(f"{d.field} ({d.kind}): {size}{rows}")
        for s in self.stages:
            work = "" if s.epoch_work is None else f", {sci(s.epoch_work)} MACs per epoch"
            lines.append(f"stage {s.name}: about {sci(s.memory)} bytes at batch {s.batch_size}{work}")
        return lines


def sci(n: int) -> str:
    """``3.2e10`` for big ints, digits for small ones; integer arithmetic only (no float overflow)."""
    if n < 10_000:
        return str(n)
    digits = str(n)
    mantissa = round(int(digits[:3]) / 10)  # two significant digits
    exponent = len(digits) - 1
    if mantissa >= 100:  # 995 rounds up to the next power of ten
        mantissa, exponent = 10, exponent + 1
    whole, tenth = divmod(mantissa, 10)
    return f"{whole}e{exponent}" if tenth == 0 else f"{whole}.{tenth}e{exponent}"


def _slots(optimizer: Any) -> int:
    if optimizer.kind == "sgd":
        return 1 if optimizer.momentum > 0 else 0
    return 2  # Adam and AdamW: first and second moments


def _model(field_: str, model: Any, shape: DataShape, files: dict[str, int]) -> ModelEstimate:
    path = getattr(model, "path", None)
    if isinstance(path, str):  # a teacher loaded from a file (TorchScript, ONNX, torch.export)
        size = files.get(path)
        # The file's bytes are (about) its float32 weights; its compute is unknown.
        params = None if size is None else size // FLOAT
        return ModelEstimate(field_, model.kind, params, None, None, "path")
    cost = net_cost(model, shape)
    if cost is None:
        return ModelEstimate(field_, model.kind, None, None, None, "kind")
    lower = not shape.shape_known
    return ModelEstimate(field_, model.kind, cost.params, cost.macs, cost.kept, cost.size_field, lower)


def _dataset(field_: str, spec: Any, uploads: dict[str, dict[str, Any]]) -> tuple[DatasetEstimate, DataShape]:
    shape = data_shape(spec, uploads)
    size_field = {"synthetic": "train_size", "imagefolder": "train_limit"}.get(spec.kind, "")
    if isinstance(spec, SyntheticData) and spec.test_size > spec.train_size:
        size_field = "test_size"
    estimate = DatasetEstimate(
        field_,
        spec.kind,
        dataset_bytes(shape),
        train_rows(spec, shape),
        ".".join(filter(None, [field_, size_field])),
        not shape.shape_known,
    )
    return estimate, shape


def estimate(
    spec: JobSpec, *, uploads: dict[str, dict[str, Any]] | None = None, files: dict[str, int] | None = None
) -> JobEstimate:
    """The job's models, datasets and stages. ``uploads`` maps an uploaded archive's path to its
    summary (shapes, sizes), ``files`` an uploaded teacher's path to its size in bytes."""
    uploads, files = uploads or {}, files or {}
    data, shape = _dataset("data", spec.data, uploads)
    datasets, models, stages = [data], [], []
    teacher_params = teacher_macs = 0
    for i, tspec in enumerate(spec.all_teachers):
        where = "teacher" if i == 0 else f"teachers.{i - 1}"
        tdata, tshape = data, shape
        if tspec.data is not None:
            tdata, tshape = _dataset(f"{where}.data", tspec.data, uploads)
            datasets.append(tdata)
        model = _model(f"{where}.model", tspec.model, tshape, files)
        models.append(model)
        teacher_params += model.params or 0
        teacher_macs += model.macs or 0
        if tspec.needs_training:
            tr = tspec.train
            name = "teacher" if i == 0 else f"teacher{i}"
            batch = f"{where}.train.batch_size"
            stages.append(
                StageEstimate(name, model, batch, tr.batch_size, _slots(tr.optimizer), tdata.train_rows)
            )

    d = spec.distill
    student = _model("student.model", spec.student.model, shape, files)
    models.append(student)
    slots = _slots(d.optimizer)
    if spec.baseline.enabled:
        stages.append(
            StageEstimate("baseline", student, "distill.batch_size", d.batch_size, slots, data.train_rows)
        )
    rows = data.train_rows
    if d.transfer.unlabelled is not None:
        pool, _ = _dataset("distill.transfer.unlabelled", d.transfer.unlabelled, uploads)
        datasets.append(pool)
        rows = None if rows is None or pool.train_rows is None else rows + pool.train_rows
    extra = Fraction(0)
    for i, loss in enumerate(d.losses):
        if isinstance(loss, SourceConsistencyLoss):
            source, _ = _dataset(f"distill.losses.{i}.source", loss.source, uploads)
            datasets.append(source)
            extra += Fraction(loss.batch_size or d.batch_size, d.batch_size)
    stages.append(
        StageEstimate(
            "student",
            student,
            "distill.batch_size",
            d.batch_size,
            slots,
            rows,
            frozen_params=teacher_params,
            frozen_macs=teacher_macs,
            extra_rows_per_sample=extra,
        )
    )
    pruned_teacher = any(isinstance(c, TeacherCompress) and c.prune and c.fine_tune for c in spec.compress)
    if pruned_teacher and spec.all_teachers:
        # the first teacher, pruned, trained on labels with the student's budget (its mask held)
        stages.append(
            StageEstimate(
                "teacher_pruned", models[0], "distill.batch_size", d.batch_size, slots, data.train_rows
            )
        )
    return JobEstimate(models, stages, datasets)


# ---------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What one job may ask for; the service reads these from its ``DISTILLERY_*`` settings."""

    max_params: int = 1_000_000_000  # per model
    max_job_memory: int = 64 << 30  # bytes, the largest stage's weights, gradients, optimizer, activations
    max_dataset_bytes: int = 64 << 30  # per dataset, as loaded
    max_epoch_work: int = 10**17  # multiply-accumulates in one epoch of one stage


@dataclass(frozen=True)
class Violation:
    field: str
    message: str


def _over(what: str, value: int, limits: Limits, name: str, lower: bool = False) -> str:
    about = "at least" if lower else "about"
    limit = getattr(limits, name)
    return (
        f"{about} {sci(value)} {what}, over this service's limit of {sci(limit)} (DISTILLERY_{name.upper()})"
    )


def check_limits(est: JobEstimate, limits: Limits) -> list[Violation]:
    """Every limit the estimate exceeds, each naming the spec field to change."""
    out: list[Violation] = []
    for m in est.models:
        if m.params is not None and m.params > limits.max_params:
            msg = _over("parameters", m.params, limits, "max_params", m.lower_bound)
            out.append(Violation(f"{m.field}.{m.size_field}", msg))
    for d in est.datasets:
        if d.bytes is not None and d.bytes > limits.max_dataset_bytes:
            msg = _over("bytes of data", d.bytes, limits, "max_dataset_bytes", d.lower_bound)
            out.append(Violation(d.size_field, msg))
    stage = max(est.stages, key=lambda s: s.memory, default=None)
    if stage is not None and stage.memory > limits.max_job_memory:
        big_batch = stage.activation_bytes > stage.weight_bytes
        where = stage.batch_field if big_batch else f"{stage.model.field}.{stage.model.size_field}"
        what = (
            f"bytes in stage {stage.name!r} ({sci(stage.weight_bytes)} for weights, gradients and optimizer, "
            f"{sci(stage.activation_bytes)} for activations at batch size {stage.batch_size})"
        )
        out.append(
            Violation(where, _over(what, stage.memory, limits, "max_job_memory", stage.model.lower_bound))
        )
    for s in est.stages:
        work = s.epoch_work
        if work is not None and work > limits.max_epoch_work:
            what = f"multiply-accumulates per epoch in stage {s.name!r} ({sci(s.samples or 0)} samples)"
            field_ = f"{s.model.field}.{s.model.size_field}"
            out.append(Violation(field_, _over(what, work, limits, "max_epoch_work", s.model.lower_bound)))
    return _unique(out)


def _unique(violations: list[Violation]) -> list[Violation]:
    """One message per field (the baseline and the student share their model, for instance)."""
    seen: dict[str, Violation] = {}
    for v in violations:
        seen.setdefault(v.field, v)
    return list(seen.values())
