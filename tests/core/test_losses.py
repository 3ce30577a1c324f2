"""Each loss against values worked out by hand (with ``math``, not with the code under test)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.errors import SpecError
from core.losses import (
    LOSSES,
    Objective,
    attention_loss,
    dkd_loss,
    kd_loss,
    logit_mse_loss,
    make_adaptor,
    soft_cross_entropy,
    term_names,
    weight_l2_loss,
)
from core.models.base import Classifier
from core.spec import CELoss, HintLoss, KDLoss, LogitMSELoss, LossSpec, WeightL2Loss


def approx(value: torch.Tensor, expected: float) -> None:
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def softmax(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_cross_entropy_one_hot_and_smoothed() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    target = torch.tensor([[0.0, 0.0, 1.0]])
    log_z = math.log(math.e + math.e**2 + math.e**3)
    approx(soft_cross_entropy(logits, target), log_z - 3)
    # smoothing 0.3 over 3 classes: targets (0.1, 0.1, 0.8)
    expected = -(0.1 * (1 - log_z) + 0.1 * (2 - log_z) + 0.8 * (3 - log_z))
    approx(soft_cross_entropy(logits, target, label_smoothing=0.3), expected)


def test_cross_entropy_mixed_targets() -> None:
    logits = torch.tensor([[0.0, 0.0]])
    approx(soft_cross_entropy(logits, torch.tensor([[0.25, 0.75]])), math.log(2))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_is_t_squared_kl(temperature: float) -> None:
    s, t = [0.5, 0.0, -1.0], [math.log(3), 0.0, 1.0]
    expected = temperature**2 * kl(
        softmax([v / temperature for v in t]), softmax([v / temperature for v in s])
    )
    approx(kd_loss(torch.tensor([s]), torch.tensor([t]), temperature), expected)


def test_kd_averages_over_the_batch_and_is_zero_on_agreement() -> None:
    s = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    t = torch.tensor([[math.log(3), 0.0], [1.0, 2.0]])
    approx(kd_loss(s, t, 1.0), (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2)
    approx(kd_loss(t, t, 3.0), 0.0)


def test_logit_mse() -> None:
    approx(logit_mse_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 4.0]])), (1 + 4) / 2)


def test_dkd_matches_hand_computation() -> None:
    s, t, T = [1.0, 0.0, 0.0], [2.0, 1.0, 0.0], 1.0
    p_s, p_t = softmax(s), softmax(t)
    b_s, b_t = [p_s[0], 1 - p_s[0]], [p_t[0], 1 - p_t[0]]
    tckd = kl(b_t, b_s)
    nckd = kl(softmax(t[1:]), softmax(s[1:]))
    got = dkd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([0]), T, 1.5, 8.0)
    approx(got, 1.5 * tckd + 8.0 * nckd)


def test_dkd_temperature_scales_by_t_squared() -> None:
    s, t, T = [0.3, -0.2, 0.9, 0.0], [1.0, 0.5, -0.5, 0.2], 2.0
    p_s, p_t = softmax([v / T for v in s]), softmax([v / T for v in t])
    tckd = kl([p_t[2], 1 - p_t[2]], [p_s[2], 1 - p_s[2]])
    rest = [0, 1, 3]
    nckd = kl(softmax([t[i] / T for i in rest]), softmax([s[i] / T for i in rest]))
    got = dkd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([2]), T, 1.0, 2.0)
    approx(got, T * T * (tckd + 2.0 * nckd))


def test_attention_loss() -> None:
    fs = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 1, 2)  # mean |f|^2 over channels: (5, 10)
    ft = torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 2)  # map (4, 0) -> normalized (1, 0)
    a = (5 / math.sqrt(125), 10 / math.sqrt(125))
    approx(attention_loss(fs, ft, 2.0), ((a[0] - 1) ** 2 + a[1] ** 2) / 2)


def test_attention_pools_a_larger_teacher_map() -> None:
    fs = torch.ones(1, 3, 2, 2)
    ft = torch.ones(1, 5, 4, 4)  # uniform maps: equal after pooling
    approx(attention_loss(fs, ft, 2.0), 0.0)


def test_weight_l2_pulls_matching_parameters() -> None:
    student, teacher = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, 2.0]]))
        student.bias.fill_(1.0)
        teacher.weight.copy_(torch.tensor([[0.0, 0.0]]))
        teacher.bias.fill_(3.0)
    loss, matched = weight_l2_loss(student, teacher, decay=0.1)
    assert matched == 2
    approx(loss, 0.5 * (1 + 4 + 4) + 0.05 * (1 + 4 + 1))


def test_weight_l2_skips_mismatched_shapes() -> None:
    _loss, matched = weight_l2_loss(nn.Linear(3, 1), nn.Linear(2, 1), decay=0.0)
    assert matched == 1  # only the bias has the same shape


def test_adaptor_shapes() -> None:
    conv = make_adaptor(torch.zeros(2, 8, 4, 4), torch.zeros(2, 16, 8, 8))
    assert isinstance(conv, nn.Conv2d) and (conv.in_channels, conv.out_channels) == (8, 16)
    assert make_adaptor(torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 8, 8)) is None
    flat = make_adaptor(torch.zeros(2, 100), torch.zeros(2, 25, 5))
    assert flat is not None and flat(torch.zeros(2, 100)).shape == (2, 125)
    assert make_adaptor(torch.zeros(2, 7), torch.zeros(2, 7)) is None


def test_term_names_disambiguate_repeats() -> None:
    specs: list[LossSpec] = [KDLoss(teacher=0), CELoss(), KDLoss(teacher=1)]
    assert term_names(specs) == ["kd.0", "ce", "kd.2"]


def _mlp(seed: int) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    return Classifier(net, (0.0,), (1.0,), rank=1)


def test_objective_is_the_weighted_sum_of_its_terms() -> None:
    student, teacher = _mlp(0), _mlp(1)
    x = torch.randn(5, 4)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).float()
    obj = Objective(
        [KDLoss(weight=0.7, temperature=2.0), CELoss(weight=0.3), LogitMSELoss(weight=2.0)],
        student,
        [teacher],
    )
    total, terms = obj(student, x, y)
    with torch.no_grad():
        t = teacher(x)
        s = student(x)
    approx(terms["kd"], float(kd_loss(s, t, 2.0)))
    approx(terms["ce"], float(soft_cross_entropy(s, y)))
    parts = {k: float(v.detach()) for k, v in terms.items()}
    approx(total, 0.7 * parts["kd"] + 0.3 * parts["ce"] + 2.0 * parts["logit_mse"])
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())  # the teacher stays frozen


def test_objective_averages_teachers_unless_one_is_named() -> None:
    student, t0, t1 = _mlp(0), _mlp(1), _mlp(2)
    x = torch.randn(4, 4)
    y = torch.zeros(4, 3)
    y[:, 0] = 1
    obj = Objective([KDLoss(temperature=1.0), LogitMSELoss(teacher=1)], student, [t0, t1])
    _, terms = obj(student, x, y)
    with torch.no_grad():
        mean = (t0(x) + t1(x)) / 2
        approx(terms["kd"], float(kd_loss(student(x), mean, 1.0)))
        approx(terms["logit_mse"], float(logit_mse_loss(student(x), t1(x))))


def test_hint_builds_an_adaptor_and_trains_it() -> None:
    student, teacher = _mlp(0), _mlp(1)
    obj = Objective([HintLoss(student_layer="1", teacher_layer="2")], student, [teacher])
    x, y = torch.randn(3, 4), torch.eye(3)
    obj.prepare(student, x, y)
    assert sum(p.numel() for p in obj.parameters()) == 6 * 3 + 3  # Linear(6, 3): hidden -> teacher logits
    _, terms = obj(student, x, y)
    terms["hint"].backward()
    assert all(p.grad is not None for p in obj.parameters())


def test_unknown_layer_is_a_spec_error_listing_modules() -> None:
    student, teacher = _mlp(0), _mlp(1)
    with pytest.raises(SpecError, match=r"has no module 'layer9'.*0, 1, 2"):
        Objective([HintLoss(student_layer="layer9", teacher_layer="0")], student, [teacher])


def test_logit_losses_refuse_different_class_counts() -> None:
    student = _mlp(0)
    teacher = Classifier(nn.Linear(4, 5), (0.0,), (1.0,), rank=1)
    obj = Objective([KDLoss()], student, [teacher])
    with pytest.raises(SpecError, match="teacher has 5 outputs, the student 3"):
        obj.prepare(student, torch.randn(2, 4), torch.eye(3)[:2])


def test_weight_l2_needs_a_matching_parameter() -> None:
    student = _mlp(0)
    teacher = Classifier(nn.Sequential(nn.Linear(4, 9)), (0.0,), (1.0,), rank=1)
    obj = Objective([WeightL2Loss()], student, [teacher])
    with pytest.raises(SpecError, match="no student parameter matches"):
        obj.prepare(student, torch.randn(2, 4), torch.eye(3)[:2])


def test_weight_l2_does_not_register_models_as_parameters() -> None:
    student, teacher = _mlp(0), _mlp(1)
    obj = Objective([WeightL2Loss()], student, [teacher])
    obj.prepare(student, torch.randn(2, 4), torch.eye(3)[:2])
    assert list(obj.parameters()) == []


def test_every_loss_kind_has_a_term() -> None:
    from typing import get_args

    union = get_args(get_args(LossSpec)[0])
    kinds = {get_args(cls.model_fields["kind"].annotation)[0] for cls in union}
    assert kinds == set(LOSSES.names())
