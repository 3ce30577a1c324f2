"""The job's report as typed data: what the engine writes to ``report.json`` (docs/report.md).

Torch-free (pydantic only): the API (``JobOut.report``), the Python client and the terminal
renderers read it without the engine. A report keeps its shape as it travels: a key the engine did
not write (a model's ``agreement`` for a teacher, a ``baseline`` field an older report lacks) is
read as its default but never written back, and a key this version does not know is kept. So
``Report.model_validate(d).model_dump(mode="json") == d`` for every report the engine wrote.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    model_serializer,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

REPORT_VERSION = 1


class ReportPart(BaseModel):
    """A frozen piece of the report that is dumped with exactly the keys it was given."""

    # extra="allow": a newer engine's keys pass through an older API or client unharmed
    model_config = ConfigDict(extra="allow", frozen=True)

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        given = self.model_fields_set | set(self.__pydantic_extra__ or ())
        return {key: value for key, value in data.items() if key in given}

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The serializer above would make the output schema "anything": describe the fields instead
        # (in the output schema, a field with a default is not required: it may be absent)
        fields = cast(CoreSchema, {k: v for k, v in schema.items() if k != "serialization"})
        return handler(fields)


class LoaderInfo(ReportPart):
    """How the job's dataset was read, and why."""

    mode: Literal["memory", "stream"] = Field(
        description="memory: decoded once into tensors; stream: per sample."
    )
    reason: str
    decoded_bytes: int = Field(description="The decoded size of the train, validation and test splits.")
    budget_bytes: int = Field(description="The memory budget the decision used.")
    workers: int = Field(0, description="Decoding processes (streaming only).")


class DatasetInfo(ReportPart):
    kind: str
    num_classes: int
    input_shape: list[int] = Field(description="One sample: [L] or [C, H, W].")
    train_size: int
    val_size: int
    test_size: int
    loader: LoaderInfo | None = None


class ModelMetrics(ReportPart):
    """One model's test metrics and costs; accuracies are fractions in [0, 1]."""

    test_top1: float
    test_top5: float
    # null where a model's outputs were not finite: the store keeps its JSON strict
    test_ece: float | None = Field(description="Expected calibration error, 15 equal bins.")
    test_nll: float | None
    agreement: float | None = Field(
        None, description="Students only: fraction of test samples whose top-1 equals the teachers'."
    )
    params: int
    macs: int | None = Field(None, description="For one sample; null when they cannot be counted.")
    flops: int | None = None
    size_bytes: int = Field(description="The weights as safetensors.")
    latency_ms_cpu_b1: float | None = Field(None, description="Absent with runtime.measure_speed false.")
    throughput_cpu_per_s: float | None = None
    source: Literal["trained", "checkpoint"] | None = Field(None, description="Teachers only.")
    best_epoch: int | None = Field(None, description="Trained models only: the selected epoch.")
    exported_torchscript_test_top1: float | None = Field(
        None, description="Student only: the exported TorchScript file, evaluated on raw test inputs."
    )


class CompressionRatios(ReportPart):
    """Teacher ÷ student; null where either side is unknown."""

    params_ratio: float | None = None
    macs_ratio: float | None = None
    size_ratio: float | None = None
    latency_speedup_cpu: float | None = None
    throughput_speedup_cpu: float | None = None


class CompressedModel(ReportPart):
    """The student after one ``compress`` item (quantization or pruning), evaluated on the CPU."""

    kind: str
    params_nonzero: int
    sparsity: float
    size_bytes: int
    note: str
    test_top1: float
    top1_change: float = Field(description="test_top1 minus the student's.")
    latency_ms_cpu_b1: float | None = None
    throughput_cpu_per_s: float | None = None


class RepeatRow(ReportPart):
    """One paired seed: the baseline and the student trained from the same initialization."""

    repeat: int = Field(
        description="0 is the job's own pair (`baseline`, `student`); r ≥ 1: stages `*.s<r>`."
    )
    seed: int = Field(description="The initialization seed the pair shared.")
    baseline_top1: float
    student_top1: float
    gain: float = Field(description="student_top1 − baseline_top1.")


class Repeats(ReportPart):
    """The KD gain across ``repeats`` paired seeds: the mean, and Student's t 95% interval."""

    k: int = Field(description="Paired seeds.")
    rows: list[RepeatRow]
    mean_gain: float
    std: float | None = Field(description="Sample standard deviation of the gains; null with one seed.")
    t: float | None = Field(description="t(0.975, k − 1), the quantile used; null with one seed.")
    ci95_low: float | None = Field(description="mean_gain − t·std/√k; null with one seed.")
    ci95_high: float | None = Field(description="mean_gain + t·std/√k; null with one seed.")


class Candidate(ReportPart):
    """A model one could deploy, on the accuracy / size / CPU latency plane."""

    name: str = Field(description="teacher, teacher+dynamic_int8, teacher+prune+fine_tune, student…")
    model: Literal["teacher", "baseline", "student"] = Field(description="The trained model it comes from.")
    compression: str = Field(description="none, dynamic_int8, prune (amount), prune+fine_tune.")
    test_top1: float
    size_bytes: int = Field(description="Dense: safetensors; int8: torch.save; pruned: nonzeros + bitmask.")
    params_nonzero: int
    latency_ms_cpu_b1: float | None = Field(None, description="Absent with runtime.measure_speed false.")
    pareto: bool = Field(
        description="Not dominated on test top-1 (higher), size and CPU latency (lower) jointly, "
        "latencies within 10% a tie; on top-1 and size alone when latency is not measured."
    )


class SourceTask(ReportPart):
    """Transfer learning: the source task's test top-1 each model keeps (one per source loss)."""

    loss: int = Field(description="The index of its source_consistency loss.")
    dataset: str
    teacher_top1: float
    baseline_top1: float | None = None
    student_top1: float


class Timing(ReportPart):
    """Seconds per stage (``teacher_s``, ``teacher1_s``…, ``baseline_s``, ``distill_s``: the
    extra keys, one per stage that ran), the whole job, and the distillation's throughput."""

    __pydantic_extra__: dict[str, float] = Field(init=False)

    distill_samples_per_s: float
    total_s: float

    @property
    def stages(self) -> dict[str, float]:
        return dict(self.__pydantic_extra__ or {})


class Environment(ReportPart):
    device: str
    torch: str
    distillery: str
    python: str
    cpu_threads: int


class TransferChoice(ReportPart):
    """With ``distill.transfer.choose: auto``: the student on the transfer set against the student
    on the plain training inputs, chosen on the validation split."""

    chosen: Literal["transfer set", "training inputs"]
    stage: str = Field(description="The stage whose weights are the reported student.")
    val_top1_transfer: float = Field(description="Best validation top-1 on the transfer set.")
    val_top1_plain: float = Field(description="Best validation top-1 on the plain training inputs.")


class Report(ReportPart):
    """Every model's metrics and costs, the KD gain and its verdict, compression, artifacts."""

    report_version: int = REPORT_VERSION
    name: str
    seed: int
    dataset: DatasetInfo
    teacher: ModelMetrics = Field(description="The first teacher.")
    teachers: list[ModelMetrics] = Field(default=[], description="The extra teachers.")
    baseline: ModelMetrics | None = Field(None, description="The labels-only student, if trained.")
    student: ModelMetrics
    transfer: TransferChoice | None = Field(
        None, description="Transfer set or plain inputs, as chosen on the validation split."
    )
    kd_gain: float | None = Field(None, description="student.test_top1 − baseline.test_top1.")
    kd_gain_stderr: float | None = None
    repeats: Repeats | None = Field(
        None, description="The gain over paired seeds (with a baseline); `kd_gain` is repeat 0's."
    )
    verdict: str
    compression: CompressionRatios = CompressionRatios()
    compressed: list[CompressedModel] = []
    candidates: list[Candidate] = Field(
        default=[], description="With `compress`: every candidate model and the Pareto front."
    )
    timing: Timing
    artifacts: dict[str, str] = Field(default={}, description="Files, relative to the output directory.")
    environment: Environment
    source_tasks: list[SourceTask] = []

    def models(self) -> list[tuple[str, ModelMetrics]]:
        """Every model with its display name, teachers first, the distilled student last."""
        rows = [("teacher", self.teacher), *[(f"teacher {i + 1}", t) for i, t in enumerate(self.teachers)]]
        if self.baseline is not None:
            rows.append(("baseline", self.baseline))
        return [*rows, ("student", self.student)]
