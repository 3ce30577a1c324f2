"""Distillation loss terms (DESIGN.md §3) and the objective that weighs them.

The formulas live in small pure functions (tested against hand-computed values); the ``LossTerm``
modules wire them to a training step: which teacher, which features, which adaptor. Every term
returns its unweighted value; the objective returns the weighted total *and* each term, so the
trainer can log all of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import SpecError
from core.features import FeatureTaps
from core.registry import Registry
from core.spec import (
    AttentionLoss,
    CELoss,
    DKDLoss,
    HintLoss,
    KDLoss,
    LogitMSELoss,
    LossSpec,
    SourceConsistencyLoss,
    WeightL2Loss,
)

# ---------------------------------------------------------------- formulas


def soft_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy against target distributions (one-hot or mixed), with label smoothing."""
    if label_smoothing:
        targets = targets * (1 - label_smoothing) + label_smoothing / targets.shape[1]
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def kd_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton et al. 2015: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def logit_mse_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared difference of the logits, averaged over samples and classes."""
    return F.mse_loss(student.float(), teacher.float())


def dkd_loss(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor,
    temperature: float,
    target_weight: float,
    nontarget_weight: float,
) -> Tensor:
    """Decoupled KD (Zhao et al. 2022): target_weight * TCKD + nontarget_weight * NCKD, each times T^2.

    TCKD is the KL between the binary (target, rest) probabilities; NCKD the KL between the
    distributions over the non-target classes alone.
    """
    t = temperature
    s, te = student.float() / t, teacher.float() / t
    gt = F.one_hot(labels, s.shape[1]).bool()
    p_s, p_t = F.softmax(s, dim=1), F.softmax(te, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1).clamp_min(1e-12)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean()
    # the target class is pushed to -inf so the softmax runs over the other classes only
    big = torch.finfo(s.dtype).max / 4
    log_q_s = F.log_softmax(s.masked_fill(gt, -big), dim=1)
    log_q_t = F.log_softmax(te.masked_fill(gt, -big), dim=1)
    q_t = log_q_t.exp()
    nckd = (q_t * (log_q_t - log_q_s)).masked_fill(gt, 0.0).sum(1).mean()
    return (target_weight * tckd + nontarget_weight * nckd) * t * t


def pool_to(teacher: Tensor, student: Tensor) -> Tensor:
    """Average-pool a teacher feature map down to the student's spatial size."""
    if teacher.shape[2:] == student.shape[2:]:
        return teacher
    if teacher.dim() == 4:
        return F.adaptive_avg_pool2d(teacher, (student.shape[2], student.shape[3]))
    return F.adaptive_avg_pool1d(teacher, student.shape[2])


def attention_map(feature: Tensor, p: float) -> Tensor:
    """Zagoruyko & Komodakis: mean over channels of |f|^p, flattened and L2-normalized per sample."""
    a = feature.float().abs().pow(p).mean(1).flatten(1)
    return F.normalize(a, dim=1)


def attention_loss(student: Tensor, teacher: Tensor, p: float) -> Tensor:
    """Mean squared distance of the two attention maps (the teacher's pooled to the student's size)."""
    teacher = pool_to(teacher, student)
    return (attention_map(student, p) - attention_map(teacher, p)).pow(2).mean()


def weight_l2_loss(student: nn.Module, teacher: nn.Module, decay: float) -> tuple[Tensor, int]:
    """1/2 ||w_s - w_t||^2 over parameters with the same name and shape, + decay/2 ||w_s||^2 over all.

    Returns the loss and how many parameter tensors were matched.
    """
    theirs = dict(teacher.named_parameters())
    pull: Tensor | None = None
    matched = 0
    for name, w in student.named_parameters():
        other = theirs.get(name)
        if other is not None and other.shape == w.shape:
            term = (w.float() - other.detach().float()).pow(2).sum()
            pull = term if pull is None else pull + term
            matched += 1
    if pull is None:
        return torch.zeros((), device=next(student.parameters()).device), 0
    loss = 0.5 * pull
    if decay:
        loss = loss + 0.5 * decay * sum(w.float().pow(2).sum() for w in student.parameters())
    return loss, matched


# ---------------------------------------------------------------- the training-step view


@dataclass
class StepContext:
    """What the loss terms of one step see."""

    x: Tensor  # the (augmented) raw inputs shared by student and teachers
    targets: Tensor  # (N, classes) label distributions
    student_logits: Tensor
    teacher_logits: list[Tensor | None]
    student_features: dict[str, Tensor] = field(default_factory=dict)
    teacher_features: list[dict[str, Tensor]] = field(default_factory=list)

    @property
    def labels(self) -> Tensor:
        return self.targets.argmax(1)

    def teacher_out(self, index: int | None) -> Tensor:
        if index is not None:
            out = self.teacher_logits[index]
            assert out is not None
            return out
        outs = [t for t in self.teacher_logits if t is not None]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)


class LossTerm(nn.Module):
    """One weighted term. Subclasses say what they need and compute the unweighted value."""

    uses_teacher_logits = False

    def __init__(self, spec: LossSpec) -> None:
        super().__init__()
        self.spec = spec
        self.weight = spec.weight

    def teacher_indices(self, n_teachers: int) -> set[int]:
        index = getattr(self.spec, "teacher", None)
        if not self.uses_teacher_logits:
            return set()
        return set(range(n_teachers)) if index is None else {index}

    def student_layers(self) -> set[str]:
        return set()

    def teacher_layers(self) -> dict[int, set[str]]:
        return {}

    def prepare(self, ctx: StepContext, student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        """Called once on a probe batch before training: build adaptors, check shapes."""

    def forward(self, ctx: StepContext) -> Tensor:
        raise NotImplementedError


LOSSES: Registry[type[LossTerm]] = Registry("loss")


@LOSSES.register("ce")
class CETerm(LossTerm):
    spec: CELoss

    def forward(self, ctx: StepContext) -> Tensor:
        return soft_cross_entropy(ctx.student_logits, ctx.targets, self.spec.label_smoothing)


class _LogitTerm(LossTerm):
    uses_teacher_logits = True

    def prepare(self, ctx: StepContext, student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        t = ctx.teacher_out(getattr(self.spec, "teacher", None))
        if t.shape != ctx.student_logits.shape:
            raise SpecError(
                f"loss '{self.spec.kind}': the teacher has {t.shape[1]} outputs, the student "
                f"{ctx.student_logits.shape[1]}; logit losses need the same classes"
            )


@LOSSES.register("kd")
class KDTerm(_LogitTerm):
    spec: KDLoss

    def forward(self, ctx: StepContext) -> Tensor:
        return kd_loss(ctx.student_logits, ctx.teacher_out(self.spec.teacher), self.spec.temperature)


@LOSSES.register("logit_mse")
class LogitMSETerm(_LogitTerm):
    spec: LogitMSELoss

    def forward(self, ctx: StepContext) -> Tensor:
        return logit_mse_loss(ctx.student_logits, ctx.teacher_out(self.spec.teacher))


@LOSSES.register("dkd")
class DKDTerm(_LogitTerm):
    spec: DKDLoss

    def forward(self, ctx: StepContext) -> Tensor:
        s = self.spec
        return dkd_loss(
            ctx.student_logits,
            ctx.teacher_out(s.teacher),
            ctx.labels,
            s.temperature,
            s.target_weight,
            s.nontarget_weight,
        )


def make_adaptor(student: Tensor, teacher: Tensor) -> nn.Module | None:
    """Map a student feature onto a teacher feature's shape; None when they already match.

    Same-rank conv features keep their layout (a 1x1 convolution maps channels; the loss pools
    the teacher to the student's spatial size); anything else is flattened and mapped linearly.
    """
    if student.shape[1:] == teacher.shape[1:]:
        return None
    if student.dim() == teacher.dim() and student.dim() in (3, 4):
        if student.shape[1] == teacher.shape[1]:
            return None
        conv = nn.Conv2d if student.dim() == 4 else nn.Conv1d
        return conv(student.shape[1], teacher.shape[1], kernel_size=1)
    return nn.Sequential(nn.Flatten(), nn.Linear(student[0].numel(), teacher[0].numel()))


def _match(student: Tensor, teacher: Tensor) -> Tensor:
    """The teacher feature in the student's layout (spatially pooled, or flattened)."""
    if student.dim() == teacher.dim() and student.dim() in (3, 4):
        return pool_to(teacher, student)
    return teacher.flatten(1)


@LOSSES.register("hint")
class HintTerm(LossTerm):
    spec: HintLoss

    def __init__(self, spec: HintLoss) -> None:
        super().__init__(spec)
        self.adaptor: nn.Module | None = None

    def student_layers(self) -> set[str]:
        return {self.spec.student_layer}

    def teacher_layers(self) -> dict[int, set[str]]:
        return {self.spec.teacher: {self.spec.teacher_layer}}

    def prepare(self, ctx: StepContext, student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        fs = ctx.student_features[self.spec.student_layer]
        ft = ctx.teacher_features[self.spec.teacher][self.spec.teacher_layer]
        self.adaptor = make_adaptor(fs, ft)
        if self.adaptor is not None:
            self.adaptor.to(fs.device)

    def forward(self, ctx: StepContext) -> Tensor:
        fs = ctx.student_features[self.spec.student_layer]
        ft = ctx.teacher_features[self.spec.teacher][self.spec.teacher_layer]
        if self.adaptor is not None:
            fs = self.adaptor(fs)
        ft = _match(fs, ft)
        return F.mse_loss(fs.float().flatten(1), ft.float().flatten(1))


@LOSSES.register("attention")
class AttentionTerm(LossTerm):
    spec: AttentionLoss

    def student_layers(self) -> set[str]:
        return set(self.spec.student_layers)

    def teacher_layers(self) -> dict[int, set[str]]:
        return {self.spec.teacher: set(self.spec.teacher_layers)}

    def prepare(self, ctx: StepContext, student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        for s_path, t_path in zip(self.spec.student_layers, self.spec.teacher_layers, strict=True):
            fs, ft = ctx.student_features[s_path], ctx.teacher_features[self.spec.teacher][t_path]
            if fs.dim() not in (3, 4) or fs.dim() != ft.dim():
                raise SpecError(
                    f"loss 'attention': {s_path!r} {tuple(fs.shape[1:])} and {t_path!r} "
                    f"{tuple(ft.shape[1:])} must both be convolutional feature maps of the same rank"
                )

    def forward(self, ctx: StepContext) -> Tensor:
        feats_t = ctx.teacher_features[self.spec.teacher]
        total = sum(
            attention_loss(ctx.student_features[s], feats_t[t], self.spec.p)
            for s, t in zip(self.spec.student_layers, self.spec.teacher_layers, strict=True)
        )
        return torch.as_tensor(total)


@LOSSES.register("weight_l2")
class WeightL2Term(LossTerm):
    spec: WeightL2Loss

    def prepare(self, ctx: StepContext, student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        # a plain tuple: assigning the modules as attributes would register their parameters here
        self._pair = (_net(student), _net(teachers[self.spec.teacher]))
        _, matched = weight_l2_loss(*self._pair, 0.0)
        if matched == 0:
            raise SpecError(
                "loss 'weight_l2': no student parameter matches a teacher parameter's name and shape"
            )

    def forward(self, ctx: StepContext) -> Tensor:
        return weight_l2_loss(*self._pair, self.spec.decay)[0]


@LOSSES.register("source_consistency")
class SourceConsistencyTerm(LossTerm):
    """Needs its own batches of source-task inputs: set with ``attach_source`` before training."""

    spec: SourceConsistencyLoss

    def attach_source(self, inputs: Tensor, batch_size: int) -> None:
        self.source = inputs
        self.batch_size = self.spec.batch_size or batch_size

    def compute(self, student: nn.Module, teacher: nn.Module) -> Tensor:
        idx = torch.randint(0, len(self.source), (self.batch_size,), device=self.source.device)
        xs = self.source[idx]
        with torch.no_grad():
            target = teacher(xs)
        out = student(xs)
        if out.shape != target.shape:
            raise SpecError(
                f"loss 'source_consistency': teacher outputs {tuple(target.shape[1:])}, "
                f"student {tuple(out.shape[1:])}; they must match"
            )
        return (out.float() - target.float()).pow(2).sum(1).mean()


def _net(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)


def term_names(specs: Sequence[LossSpec]) -> list[str]:
    """``kd`` for a kind used once; ``kd.0``, ``kd.2`` (positions in the list) when repeated."""
    counts = Counter(s.kind for s in specs)
    return [s.kind if counts[s.kind] == 1 else f"{s.kind}.{i}" for i, s in enumerate(specs)]


class Objective(nn.Module):
    """The weighted sum of loss terms for a student and its (frozen) teachers."""

    def __init__(self, specs: Sequence[LossSpec], student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.names = term_names(specs)
        terms = [LOSSES.get(s.kind)(s) for s in specs]
        self.terms = nn.ModuleList(terms)  # registered: adaptors train and are checkpointed
        self.term_list: list[LossTerm] = terms
        self.teachers = list(teachers)  # a plain list: teachers are not trained nor saved with the objective
        self.student_taps: FeatureTaps | None = None
        self.teacher_taps: list[FeatureTaps | None] = [None] * len(teachers)
        s_layers = set().union(*(t.student_layers() for t in self.term_list))
        if s_layers:
            self.student_taps = FeatureTaps(_net(student), s_layers, "the student")
        for i, teacher in enumerate(self.teachers):
            t_layers = set().union(*(t.teacher_layers().get(i, set()) for t in self.term_list))
            if t_layers:
                self.teacher_taps[i] = FeatureTaps(_net(teacher), t_layers, f"teacher {i}")
        self._kept_outputs: list[Tensor | None] | None = None  # keep_teacher_outputs
        self.needed_teachers = sorted(
            set().union(
                *(t.teacher_indices(len(teachers)) for t in self.term_list),
                *(t.teacher_layers().keys() for t in self.term_list),
            )
        )

    # ------------------------------------------------ the teachers' outputs, computed once

    def can_keep_teacher_outputs(self) -> bool:
        """Whether a training row's teacher outputs are the same at every epoch, given the same
        input: teachers in eval mode (no dropout, no batch statistics), read at their logits only
        (no feature taps). The trainer adds the other condition: no input augmentation."""
        return bool(self.needed_teachers) and all(
            self.teacher_taps[i] is None and not self.teachers[i].training for i in self.needed_teachers
        )

    @torch.no_grad()
    def keep_teacher_outputs(self, x: Tensor, batch_size: int, max_bytes: int) -> bool:
        """Compute each needed teacher's outputs for every row of ``x`` (float inputs, in batches
        of ``batch_size``) and keep them, so that a step indexes them (``forward(rows=...)``)
        instead of running the teachers. False, keeping nothing, if they would take more than
        ``max_bytes``."""
        self.drop_teacher_outputs()
        kept: list[Tensor | None] = [None] * len(self.teachers)
        for i in self.needed_teachers:
            parts = [self.teachers[i](x[:batch_size].float())]
            per_row = parts[0][0].numel() * parts[0].element_size()  # known from the first batch
            if per_row * len(x) * len(self.needed_teachers) > max_bytes:
                return False
            for start in range(batch_size, len(x), batch_size):
                parts.append(self.teachers[i](x[start : start + batch_size].float()))
            kept[i] = torch.cat(parts)
        self._kept_outputs = kept
        return True

    @property
    def keeps_teacher_outputs(self) -> bool:
        return self._kept_outputs is not None

    def drop_teacher_outputs(self) -> None:
        self._kept_outputs = None

    def _context(self, student: nn.Module, x: Tensor, targets: Tensor, rows: Tensor | None) -> StepContext:
        logits: list[Tensor | None] = [None] * len(self.teachers)
        t_feats: list[dict[str, Tensor]] = [{} for _ in self.teachers]
        kept = self._kept_outputs if rows is not None else None
        with torch.no_grad():
            for i in self.needed_teachers:
                if kept is not None and (outputs := kept[i]) is not None:
                    logits[i] = outputs[rows]
                    continue
                logits[i] = self.teachers[i](x)
                taps = self.teacher_taps[i]
                if taps is not None:
                    t_feats[i] = dict(taps.values)
        out = student(x)
        s_feats = dict(self.student_taps.values) if self.student_taps else {}
        return StepContext(x, targets, out, logits, s_feats, t_feats)

    def prepare(self, student: nn.Module, x: Tensor, targets: Tensor) -> None:
        ctx = self._context(student, x, targets, None)
        for term in self.term_list:
            term.prepare(ctx, student, self.teachers)

    def forward(
        self, student: nn.Module, x: Tensor, targets: Tensor, rows: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The total loss and each term's value. ``rows``: the training rows ``x`` holds, unchanged
        (no augmentation), to read the teachers' kept outputs (``keep_teacher_outputs``) instead
        of running them; without it, or with nothing kept, the teachers run on ``x``."""
        ctx = self._context(student, x, targets, rows)
        values: dict[str, Tensor] = {}
        for name, term in zip(self.names, self.term_list, strict=True):
            if isinstance(term, SourceConsistencyTerm):
                values[name] = term.compute(student, self.teachers[term.spec.teacher])
            else:
                values[name] = term(ctx)
        total: Tensor | None = None
        for name, term in zip(self.names, self.term_list, strict=True):
            if term.weight:
                part = values[name] if term.weight == 1 else term.weight * values[name]
                total = part if total is None else total + part
        assert total is not None  # the spec refuses all-zero weights
        return total, values

    def close(self) -> None:
        for taps in [self.student_taps, *self.teacher_taps]:
            if taps is not None:
                taps.remove()
