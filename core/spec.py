"""The job spec: one typed description of a distillation job (DESIGN.md §3).

Importable without torch: the API validates specs with it, the worker validates them again,
and ``JobSpec.model_json_schema()`` is what the dashboard's editor uses. Every section has
defaults, so ``JobSpec()`` is the default recipe (MNIST-1D, CNN teacher -> MLP student, KD on a
mixup transfer set). Models are frozen and refuse unknown fields; every union is tagged by
``kind`` so an unknown name fails with the list of the known ones.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import SpecError

SPEC_VERSION: Final = 1
# Hard bounds on what one spec may ask for; the service's finer limits come from core.estimate.
MAX_WIDTH: Final = 1 << 20  # units or channels of one layer
MAX_ROWS: Final = 100_000_000  # samples of a dataset
MAX_BATCH: Final = 65_536
SEED_MAX: Final = 2**32 - 1  # NumPy and scikit-learn refuse larger seeds
MAX_REPEATS: Final = 20  # seeds of the baseline/student pair (each one more pair of trainings)


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _relative_path(value: str) -> str:
    """Paths in a spec live under the data root: relative, and never climbing out of it."""
    p = PurePosixPath(value)
    if not value or p.is_absolute() or ".." in p.parts or "\\" in value:
        raise ValueError("must be a relative path inside the data root, without '..'")
    return value


RelPath = Annotated[str, Field(min_length=1, max_length=500)]

# ---------------------------------------------------------------- datasets


class LoaderSpec(_Spec):
    """How the engine reads the dataset: whole in memory, or streamed from its files."""

    mode: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description=(
            "memory: decode everything once and train from tensors on the device (fastest when it "
            "fits); stream: read and decode per sample through a DataLoader; auto: memory when the "
            "decoded dataset fits the worker's memory budget (DISTILLERY_DATA_MEMORY_BYTES), else stream."
        ),
    )
    workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Decoding processes for streaming; null: the CPUs less one (at most 8).",
    )


class _DataBase(_Spec):
    loader: LoaderSpec = Field(LoaderSpec(), description="Memory or streaming, and decoding workers.")
    val_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Fraction of the training split held out for validation."
    )
    train_limit: int | None = Field(
        None,
        ge=1,
        le=MAX_ROWS,
        description="Use at most this many training samples (after the validation split).",
    )


class MNIST1DData(_DataBase):
    """MNIST-1D from the ``mnist1d`` package's generator: 4000 train / 1000 test, 40 points, 10 classes."""

    kind: Literal["mnist1d"] = "mnist1d"
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="Generator seed; null keeps the package's default."
    )


class DigitsData(_DataBase):
    """scikit-learn's 8x8 handwritten digits (1797 images), split into train and test here."""

    kind: Literal["digits"] = "digits"
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    split_seed: int = Field(0, ge=0, le=SEED_MAX)


class SyntheticData(_DataBase):
    """Generated class-conditional images: each class is a smooth random template plus noise."""

    kind: Literal["synthetic"] = "synthetic"
    num_classes: int = Field(10, ge=2, le=1000)
    channels: int = Field(3, ge=1, le=16)
    size: int = Field(32, ge=4, le=512, description="Image height and width.")
    train_size: int = Field(2000, ge=10, le=MAX_ROWS)
    test_size: int = Field(500, ge=10, le=MAX_ROWS)
    noise: float = Field(1.0, ge=0.0, description="Noise std relative to the templates' std.")
    seed: int = Field(0, ge=0, le=2**63 - 1)


ImageTransforms = Literal["none", "standard"]
TRANSFORMS_DOC = (
    "standard: per-sample random resized crop and flip for training, resize and centre crop for "
    "evaluation (streaming loader only); none: every image resized to the square."
)


def _transforms_need_streaming(data: Any) -> Any:
    if data.transforms != "none" and data.loader.mode == "memory":
        raise ValueError(
            f"transforms {data.transforms!r} draw a new crop per sample and epoch, which needs the "
            "streaming loader: set loader.mode to stream or auto, or transforms to none"
        )
    return data


TorchvisionName = Literal["mnist", "fashion_mnist", "cifar10", "cifar100", "svhn"]


class TorchvisionData(_DataBase):
    """A torchvision dataset read from the data root (``<root>/<folder>``); never downloaded unless asked."""

    kind: TorchvisionName
    folder: RelPath | None = Field(None, description="Folder under the data root; default: the kind.")
    download: bool = Field(False, description="Allow torchvision to download the files if absent.")
    transforms: ImageTransforms = Field("none", description=TRANSFORMS_DOC)

    _check_folder = field_validator("folder")(lambda v: None if v is None else _relative_path(v))
    _check_transforms = model_validator(mode="after")(_transforms_need_streaming)


class ImageFolderData(_DataBase):
    """Images in ``<data root>/<path>/{train,test}/<class>/*``; a ``val`` folder is used when present."""

    kind: Literal["imagefolder"] = "imagefolder"
    path: RelPath
    image_size: int = Field(32, ge=8, le=512)
    channels: Literal[1, 3] = 3
    transforms: ImageTransforms = Field("none", description=TRANSFORMS_DOC)

    _check_path = field_validator("path")(_relative_path)
    _check_transforms = model_validator(mode="after")(_transforms_need_streaming)


class NpzData(_DataBase):
    """An ``.npz`` archive under the data root with ``x_train``, ``y_train``, ``x_test``, ``y_test``."""

    kind: Literal["npz"] = "npz"
    path: RelPath

    _check_path = field_validator("path")(_relative_path)


DatasetSpec = Annotated[
    Union[MNIST1DData, DigitsData, SyntheticData, TorchvisionData, ImageFolderData, NpzData],
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------- models


class MLPModel(_Spec):
    """Fully connected network on the flattened input."""

    kind: Literal["mlp"] = "mlp"
    hidden: tuple[Annotated[int, Field(ge=1, le=MAX_WIDTH)], ...] = Field((100, 100), max_length=64)
    activation: Literal["relu", "gelu", "tanh"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CNN1DModel(_Spec):
    """1-D CNN (MNIST-1D's ConvBase): strided convolutions, then a linear classifier."""

    kind: Literal["cnn1d"] = "cnn1d"
    channels: int = Field(25, ge=1, le=4096)
    layers: int = Field(3, ge=1, le=8)


class CNNModel(_Spec):
    """Small 2-D CNN: conv-BN-ReLU blocks with 2x2 max-pooling, then a hidden layer."""

    kind: Literal["cnn"] = "cnn"
    channels: tuple[Annotated[int, Field(ge=1, le=MAX_WIDTH)], ...] = Field((32, 64), max_length=32)
    hidden: int = Field(128, ge=1, le=MAX_WIDTH)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CifarResNetModel(_Spec):
    """CIFAR-style ResNet (He et al. 2016): depth 6n+2; ``width`` 4 gives resnet8x4 / resnet32x4."""

    kind: Literal["cifar_resnet"] = "cifar_resnet"
    depth: Literal[8, 14, 20, 32, 44, 56, 110] = 20
    width: int = Field(1, ge=1, le=8)


class WideResNetModel(_Spec):
    """Wide ResNet (Zagoruyko & Komodakis 2016): WRN-depth-widen, depth 6n+4."""

    kind: Literal["wide_resnet"] = "wide_resnet"
    depth: Literal[10, 16, 22, 28, 40] = 16
    widen: int = Field(2, ge=1, le=12)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


TorchvisionArch = Literal[
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "efficientnet_b0",
]


class TorchvisionModel(_Spec):
    """A torchvision ImageNet architecture adapted to the data's channels, size and classes (no weights)."""

    kind: Literal["torchvision"] = "torchvision"
    arch: TorchvisionArch = "resnet18"


class TorchScriptModel(_Spec):
    """A teacher given as a TorchScript file under the data root. It takes the dataset's raw inputs."""

    kind: Literal["torchscript"] = "torchscript"
    path: RelPath

    _check_path = field_validator("path")(_relative_path)


class OnnxModel(_Spec):
    """An ONNX teacher file under the data root, run by ONNX Runtime: raw inputs in, logits out."""

    kind: Literal["onnx"] = "onnx"
    path: RelPath

    _check_path = field_validator("path")(_relative_path)


class Pt2Model(_Spec):
    """A `torch.export.save` teacher (`.pt2`, dynamic batch) under the data root: logits out."""

    kind: Literal["pt2"] = "pt2"
    path: RelPath

    _check_path = field_validator("path")(_relative_path)


# Teachers loaded from a file: they carry their weights, take raw inputs, and expose no modules.
FILE_MODEL_KINDS: Final = ("torchscript", "onnx", "pt2")
FileModel = TorchScriptModel | OnnxModel | Pt2Model

ArchitectureSpec = Annotated[
    Union[MLPModel, CNN1DModel, CNNModel, CifarResNetModel, WideResNetModel, TorchvisionModel],
    Field(discriminator="kind"),
]
ModelSpec = Annotated[
    Union[
        MLPModel,
        CNN1DModel,
        CNNModel,
        CifarResNetModel,
        WideResNetModel,
        TorchvisionModel,
        TorchScriptModel,
        OnnxModel,
        Pt2Model,
    ],
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------- augmentations (the transfer set)


class MixupAug(_Spec):
    """Convex combination of two samples (and of their labels), weight ~ Beta(alpha, alpha)."""

    kind: Literal["mixup"] = "mixup"
    alpha: float = Field(1.0, gt=0.0)


class CutmixAug(_Spec):
    """Paste a random box (an interval for 1-D data) of another sample; labels mixed by area."""

    kind: Literal["cutmix"] = "cutmix"
    alpha: float = Field(1.0, gt=0.0)


class MaskAug(_Spec):
    """Random masking: each position is set to the data mean with probability ``prob``."""

    kind: Literal["mask"] = "mask"
    prob: float = Field(0.1, gt=0.0, lt=1.0)


class ReplaceAug(_Spec):
    """Random replacement: each position takes another sample's value with probability ``prob``."""

    kind: Literal["replace"] = "replace"
    prob: float = Field(0.1, gt=0.0, lt=1.0)


class NoiseAug(_Spec):
    """Additive Gaussian noise, ``std`` in units of the data's standard deviation."""

    kind: Literal["noise"] = "noise"
    std: float = Field(0.1, gt=0.0)


class ShiftAug(_Spec):
    """Random circular shift by up to ``max_shift`` positions along every spatial axis."""

    kind: Literal["shift"] = "shift"
    max_shift: int = Field(3, ge=1, le=1024)


class CropAug(_Spec):
    """Random crop after zero padding by ``padding`` pixels (images)."""

    kind: Literal["crop"] = "crop"
    padding: int = Field(4, ge=1, le=256)


class FlipAug(_Spec):
    """Horizontal flip with probability ``prob`` (images)."""

    kind: Literal["flip"] = "flip"
    prob: float = Field(0.5, gt=0.0, le=1.0)


AugmentSpec = Annotated[
    Union[MixupAug, CutmixAug, MaskAug, ReplaceAug, NoiseAug, ShiftAug, CropAug, FlipAug],
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------- losses

TeacherIndex = Annotated[int, Field(ge=0, description="Which teacher: 0 is `teacher`, 1.. are `teachers`.")]


class CELoss(_Spec):
    """Cross-entropy with the labels (mixed labels under mixup/cutmix)."""

    kind: Literal["ce"] = "ce"
    weight: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


class KDLoss(_Spec):
    """Hinton et al.: T^2 * KL(softmax(t/T) || softmax(s/T))."""

    kind: Literal["kd"] = "kd"
    weight: float = Field(1.0, ge=0.0)
    temperature: float = Field(2.0, gt=0.0)
    teacher: TeacherIndex | None = Field(None, description="null: the teachers' mean logits.")


class LogitMSELoss(_Spec):
    """Mean squared error between student and teacher logits."""

    kind: Literal["logit_mse"] = "logit_mse"
    weight: float = Field(1.0, ge=0.0)
    teacher: TeacherIndex | None = None


class HintLoss(_Spec):
    """FitNets: MSE between a student feature (through a learned adaptor) and a teacher feature."""

    kind: Literal["hint"] = "hint"
    weight: float = Field(1.0, ge=0.0)
    student_layer: str = Field(
        min_length=1, max_length=200, description="Module path in the student, e.g. 'layer2'."
    )
    teacher_layer: str = Field(min_length=1, max_length=200)
    teacher: TeacherIndex = 0


class AttentionLoss(_Spec):
    """Attention transfer (Zagoruyko & Komodakis): distance of normalized |f|^p maps, summed over pairs."""

    kind: Literal["attention"] = "attention"
    weight: float = Field(1000.0, ge=0.0)
    student_layers: tuple[str, ...] = Field(min_length=1, max_length=16)
    teacher_layers: tuple[str, ...] = Field(min_length=1, max_length=16)
    p: float = Field(2.0, gt=0.0)
    teacher: TeacherIndex = 0

    @model_validator(mode="after")
    def _pairs(self) -> AttentionLoss:
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError("student_layers and teacher_layers must pair up (same length)")
        return self


class DKDLoss(_Spec):
    """Decoupled KD (Zhao et al. 2022): target-class and non-target-class terms weighted separately."""

    kind: Literal["dkd"] = "dkd"
    weight: float = Field(1.0, ge=0.0)
    target_weight: float = Field(1.0, ge=0.0, description="Weight of the target-class (TCKD) term.")
    nontarget_weight: float = Field(8.0, ge=0.0, description="Weight of the non-target (NCKD) term.")
    temperature: float = Field(4.0, gt=0.0)
    teacher: TeacherIndex | None = None


class WeightL2Loss(_Spec):
    """1/2 ||w_s - w_t||^2 over parameters of the same name and shape, + decay/2 ||w_s||^2."""

    kind: Literal["weight_l2"] = "weight_l2"
    weight: float = Field(1.0, ge=0.0)
    decay: float = Field(0.0, ge=0.0)
    teacher: TeacherIndex = 0


class SourceConsistencyLoss(_Spec):
    """Transfer learning: ||f_t(x_src) - f_s(x_src)||^2 on batches of a source-task dataset."""

    kind: Literal["source_consistency"] = "source_consistency"
    weight: float = Field(1.0, ge=0.0)
    source: DatasetSpec
    batch_size: int | None = Field(
        None, ge=1, le=MAX_BATCH, description="Default: the distillation batch size."
    )
    teacher: TeacherIndex = 0


LossSpec = Annotated[
    Union[
        CELoss, KDLoss, LogitMSELoss, HintLoss, AttentionLoss, DKDLoss, WeightL2Loss, SourceConsistencyLoss
    ],
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------- optimization


class SGDOptim(_Spec):
    """Stochastic gradient descent with (Nesterov) momentum and L2 weight decay."""

    kind: Literal["sgd"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0)


class AdamOptim(_Spec):
    """Adam; ``weight_decay`` is added to the gradient (L2), as in torch.optim.Adam."""

    kind: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.0, ge=0.0)


class AdamWOptim(_Spec):
    """AdamW: Adam with decoupled weight decay."""

    kind: Literal["adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0.0)


OptimizerSpec = Annotated[Union[SGDOptim, AdamOptim, AdamWOptim], Field(discriminator="kind")]


class ConstantSchedule(_Spec):
    """The optimizer's rate throughout, after an optional linear warmup."""

    kind: Literal["constant"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0, description="Linear warmup from 0, in epochs.")


class StepSchedule(_Spec):
    """Multiply the rate by ``gamma`` at each milestone epoch."""

    kind: Literal["step"] = "step"
    milestones: tuple[Annotated[int, Field(ge=1, le=10_000)], ...] = Field((30, 60, 90), max_length=64)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    warmup_epochs: float = Field(0.0, ge=0.0)


class CosineSchedule(_Spec):
    """Cosine decay from the optimizer's rate to ``min_lr`` over the stage, after a linear warmup."""

    kind: Literal["cosine"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)


class InverseTimeSchedule(_Spec):
    """eta_t = eta_0 / (1 + eta_0 * t / decay_steps), t counted in optimizer steps."""

    kind: Literal["inverse_time"] = "inverse_time"
    decay_steps: float = Field(1000.0, gt=0.0)


ScheduleSpec = Annotated[
    Union[ConstantSchedule, StepSchedule, CosineSchedule, InverseTimeSchedule], Field(discriminator="kind")
]


class TrainSpec(_Spec):
    """How a model is trained on labels (the teacher stage). Defaults: the MNIST-1D recipe."""

    epochs: int = Field(150, ge=1, le=10_000)
    batch_size: int = Field(100, ge=1, le=65_536)
    optimizer: OptimizerSpec = AdamOptim(lr=0.01)
    schedule: ScheduleSpec = CosineSchedule()
    grad_clip_norm: float | None = Field(None, gt=0.0, description="Clip the global gradient norm.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    augment: tuple[AugmentSpec, ...] = Field((ShiftAug(),), max_length=16)
    select: Literal["best", "last"] = Field("best", description="Keep the best-validation or the last epoch.")


# ---------------------------------------------------------------- job sections


class TeacherSpec(_Spec):
    model: ModelSpec = CNN1DModel(channels=64)
    checkpoint: RelPath | None = Field(
        None, description="safetensors weights for `model` under the data root; null trains the teacher."
    )
    train: TrainSpec = TrainSpec()
    data: DatasetSpec | None = Field(None, description="Train the teacher on this dataset (default: `data`).")
    from_job: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9]{1,32}$",
        description="Reuse the teacher another job of the team trained (its id); the service fills in "
        "that teacher's model, training and data, which must not be given here.",
    )

    _check_checkpoint = field_validator("checkpoint")(lambda v: None if v is None else _relative_path(v))

    @property
    def needs_training(self) -> bool:
        return self.checkpoint is None and self.model.kind not in FILE_MODEL_KINDS

    @model_validator(mode="after")
    def _torchscript_has_no_checkpoint(self) -> TeacherSpec:
        if self.model.kind in FILE_MODEL_KINDS and self.checkpoint is not None:
            raise ValueError(f"a {self.model.kind} teacher carries its weights: leave `checkpoint` null")
        if self.from_job is not None and (self.checkpoint is not None or self.model.kind in FILE_MODEL_KINDS):
            raise ValueError("a teacher from another job is trained weights: leave `checkpoint` null")
        return self


class StudentSpec(_Spec):
    model: ArchitectureSpec = Field(MLPModel(), description="A registry architecture (not TorchScript).")


class TransferSpec(_Spec):
    """The transfer set: the training inputs, augmented on the fly, labelled by the teacher."""

    augment: tuple[AugmentSpec, ...] = Field((ShiftAug(), MixupAug()), max_length=16)
    unlabelled: DatasetSpec | None = Field(
        None, description="Extra inputs (their labels unused) added to the transfer set."
    )
    choose: Literal["auto", "always"] = Field(
        "auto",
        description="auto: the student is also distilled on the plain training inputs (stage "
        "`student.plain`: same budget, same initial weights), and the one with the better validation "
        "top-1 is kept: a transfer set helps some tasks and budgets and hurts others. always: the "
        "transfer set only (half the distillation cost). Nothing to choose without augmentations or a pool.",
    )


def _default_losses() -> tuple[Any, ...]:
    return (KDLoss(),)


class DistillSpec(_Spec):
    """How the student is distilled. The labels-only baseline uses the same budget."""

    losses: tuple[LossSpec, ...] = Field(default_factory=_default_losses, min_length=1, max_length=16)
    transfer: TransferSpec = TransferSpec()
    epochs: int = Field(1000, ge=1, le=10_000)
    batch_size: int = Field(100, ge=1, le=65_536)
    optimizer: OptimizerSpec = AdamOptim(lr=0.01)
    schedule: ScheduleSpec = CosineSchedule()
    grad_clip_norm: float | None = Field(None, gt=0.0, description="Clip the global gradient norm.")
    select: Literal["best", "last"] = Field("best", description="Keep the best-validation or the last epoch.")

    @model_validator(mode="after")
    def _some_weight(self) -> DistillSpec:
        if all(loss.weight == 0 for loss in self.losses):
            raise ValueError("every loss term has weight 0")
        return self


class BaselineSpec(_Spec):
    """The labels-only student trained with the distillation budget; ``true``/``false`` also accepted."""

    enabled: bool = True
    augment: bool = Field(
        False, description="Train the baseline on the same augmented inputs (with mixed labels)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class DynamicInt8Compress(_Spec):
    """Dynamic int8 quantization of the Linear layers (CPU inference)."""

    kind: Literal["dynamic_int8"] = "dynamic_int8"


class PruneCompress(_Spec):
    """Global unstructured magnitude pruning of conv and linear weights."""

    kind: Literal["prune"] = "prune"
    amount: float = Field(0.5, gt=0.0, lt=1.0)


class TeacherCompress(_Spec):
    """Compress the teacher itself, to set distillation beside pruning and quantizing the teacher.

    ``prune``: global L1 magnitude pruning of the teacher's Conv/Linear weights down to the
    student's parameter count (its nonzero parameters, biases included, equal the student's
    parameters), then, with ``fine_tune``, training on labels with the student's budget
    (``distill`` epochs, batch size, optimizer, schedule; the baseline's augmentation choice), the
    pruned weights held at zero: stage ``teacher_pruned``. ``dynamic_int8``: the teacher's Linear
    layers quantized to int8. The first teacher (``teacher``) is compressed; it must be a registry
    architecture trained on the job's dataset. Every other ``compress`` item compresses the student."""

    kind: Literal["teacher"] = "teacher"
    prune: bool = Field(True, description="Magnitude-prune the teacher to the student's parameter count.")
    fine_tune: bool = Field(
        True, description="Fine-tune the pruned teacher on labels with the student's budget (with prune)."
    )
    dynamic_int8: bool = Field(True, description="Also quantize the teacher's Linear layers to int8.")

    @model_validator(mode="after")
    def _something_to_do(self) -> TeacherCompress:
        if not (self.prune or self.dynamic_int8):
            raise ValueError("asks for nothing: set prune or dynamic_int8")
        return self


CompressSpec = Annotated[
    Union[DynamicInt8Compress, PruneCompress, TeacherCompress], Field(discriminator="kind")
]
ExportFormat = Literal["safetensors", "torchscript", "onnx", "pt2"]


class ResourcesSpec(_Spec):
    """Read by the service's scheduler (where and on how many devices) and by the engine (how many
    data-parallel ranks)."""

    gpus: int = Field(
        1,
        ge=0,
        le=8,
        description=(
            "GPUs of one host, all or nothing; above 1 the job runs data-parallel, one process per "
            "GPU (batch sizes must be multiples of it). 0: a CPU is enough (still one slot)."
        ),
    )
    gpu_type: str = Field("any", min_length=1, max_length=64, description="A GPU type queue, or any.")
    priority: Literal["low", "normal", "high"] = Field("normal", description="Order within the team's jobs.")


class RuntimeSpec(_Spec):
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast on CUDA devices that support it, fp32 elsewhere."
    )
    compile: bool = Field(False, description="torch.compile the student and teacher.")
    eval_batch_size: int = Field(1000, ge=1, le=MAX_BATCH)
    measure_speed: bool = Field(True, description="Measure CPU latency and throughput in the report.")
    checkpoint_every_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description=(
            "Inside an epoch, save a step checkpoint (weights, optimizer, RNG, batch position) at most "
            "this often; a retried attempt resumes from it mid-epoch. Epoch ends always checkpoint."
        ),
    )


class JobSpec(_Spec):
    """A distillation job. Every field has a default: ``{}`` is the MNIST-1D recipe."""

    spec_version: Literal[1] = Field(SPEC_VERSION, description="Version of this schema.")
    name: str = Field(
        "distillation", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", description="Letters, digits, . _ -"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds splits, initialization and batches.")
    data: DatasetSpec = Field(MNIST1DData(), description="The task's dataset.")
    teacher: TeacherSpec = Field(TeacherSpec(), description="The teacher: trained here or given.")
    teachers: tuple[TeacherSpec, ...] = Field((), max_length=8, description="Extra teachers (ensemble).")
    student: StudentSpec = Field(StudentSpec(), description="The student's architecture.")
    distill: DistillSpec = Field(DistillSpec(), description="Losses, transfer set and budget.")
    baseline: BaselineSpec = Field(BaselineSpec(), description="The labels-only student.")
    export: tuple[ExportFormat, ...] = Field(
        ("safetensors", "torchscript", "onnx"), max_length=4, description="Student formats, each verified."
    )
    compress: tuple[CompressSpec, ...] = Field(
        (),
        max_length=8,
        description=(
            "Evaluated post-training compressions of the student (dynamic_int8, prune); a `teacher` "
            "item also compresses the teacher (pruned to the student's size and fine-tuned, int8), "
            "and the report sets every candidate in one table of accuracy against size and CPU latency."
        ),
    )
    repeats: int = Field(
        1,
        ge=1,
        le=MAX_REPEATS,
        description=(
            "Train the baseline and the student with this many initialization seeds (the teacher once); "
            "the report gives the mean KD gain over the paired seeds with a 95% confidence interval, "
            "and the verdict uses it. Needs the baseline."
        ),
    )
    resources: ResourcesSpec = Field(ResourcesSpec(), description="What the job asks of the GPU pool.")
    runtime: RuntimeSpec = Field(RuntimeSpec(), description="Precision, compilation, evaluation.")

    @property
    def all_teachers(self) -> tuple[TeacherSpec, ...]:
        return (self.teacher, *self.teachers)

    @model_validator(mode="after")
    def _cross_checks(self) -> JobSpec:
        n = len(self.all_teachers)
        for i, loss in enumerate(self.distill.losses):
            index = getattr(loss, "teacher", None)
            if index is not None and index >= n:
                raise ValueError(
                    f"distill.losses.{i}.teacher: teacher {index} does not exist ({n} teacher(s))"
                )
            if loss.kind in ("hint", "attention", "weight_l2"):
                assert index is not None
                if (kind := self.all_teachers[index].model.kind) in FILE_MODEL_KINDS:
                    raise ValueError(
                        f"distill.losses.{i}: a '{loss.kind}' loss needs the teacher's modules, "
                        f"which a {kind} teacher does not expose (it gives logits only)"
                    )
        if len(set(self.export)) != len(self.export):
            raise ValueError("export: a format is listed twice")
        if self.repeats > 1 and not self.baseline.enabled:
            raise ValueError(
                f"repeats: {self.repeats} seeds pair the student with the labels-only baseline, "
                "which is disabled; enable `baseline` or set repeats to 1"
            )
        self._check_teacher_compress()
        return self

    def _check_teacher_compress(self) -> None:
        items = [i for i, c in enumerate(self.compress) if c.kind == "teacher"]
        if len(items) > 1:
            raise ValueError(f"compress.{items[1]}: the teacher is compressed once; one `teacher` item")
        if not items:
            return
        if (kind := self.teacher.model.kind) in FILE_MODEL_KINDS:
            raise ValueError(
                f"compress.{items[0]}: a {kind} teacher gives logits only and cannot be pruned or "
                "quantized here; use a registry architecture (with `checkpoint`) or drop the item"
            )
        if self.teacher.data is not None:
            raise ValueError(
                f"compress.{items[0]}: the teacher was trained on another dataset (teacher.data); "
                "its compressed forms would not be candidates for this task"
            )


# ---------------------------------------------------------------- loading and errors


def format_validation_error(error: ValidationError) -> list[str]:
    """One line per problem, each naming the field path (``distill.losses.0.kind: ...``)."""
    lines = []
    for item in error.errors(include_url=False):
        loc = ".".join(str(part) for part in item["loc"]) or "(spec)"
        lines.append(f"{loc}: {item['msg']}")
    return lines


def parse_spec(data: Any) -> JobSpec:
    """Validate a mapping into a ``JobSpec``; raise ``SpecError`` listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(f"a job spec must be a mapping, not {type(data).__name__}")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError("invalid job spec:\n  " + "\n  ".join(format_validation_error(e))) from None


def load_spec_text(text: str, *, fmt: Literal["yaml", "json"] = "yaml") -> JobSpec:
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise SpecError(f"the spec is not valid {fmt.upper()}: {e}") from None
    return parse_spec({} if data is None else data)


def load_spec(path: str | Path) -> JobSpec:
    """Read a spec from a ``.yaml``/``.yml`` or ``.json`` file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"cannot read spec file {path}: {e.strerror}") from None
    return load_spec_text(text, fmt="json" if path.suffix == ".json" else "yaml")


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of ``JobSpec`` (served by the API, used by the dashboard's editor)."""
    return JobSpec.model_json_schema()
