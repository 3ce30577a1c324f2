from __future__ import annotations

import math
import time
import warnings

import pytest
import torch
from torch import nn

from core.evaluate import classification_metrics, measure_speed, model_cost, predict_logits, size_on_disk
from core.models.base import Classifier

# 4 samples, 6 classes, given as probabilities so that every metric can be computed by hand.
PROBS = torch.tensor(
    [
        [0.70, 0.10, 0.05, 0.05, 0.05, 0.05],  # y=0: right, confidence 0.70 (bin 10)
        [0.72, 0.10, 0.08, 0.05, 0.03, 0.02],  # y=5: wrong, y ranked 6th (out of top-5), conf 0.72 (bin 10)
        [0.10, 0.62, 0.09, 0.08, 0.06, 0.05],  # y=3: wrong, y ranked 4th (in top-5), conf 0.62 (bin 9)
        [0.05, 0.05, 0.82, 0.04, 0.02, 0.02],  # y=2: right, confidence 0.82 (bin 12)
    ]
)
Y = torch.tensor([0, 5, 3, 2])


def test_metrics_match_hand_computed_values() -> None:
    teacher = torch.zeros(4, 6)
    teacher[torch.arange(4), torch.tensor([0, 0, 3, 1])] = 1.0  # agrees on samples 0 and 1
    m = classification_metrics(PROBS.log(), Y, teacher_logits=teacher)
    assert m["top1"] == 0.5
    assert m["top5"] == 0.75
    # bin 10: acc 1/2, mean conf 0.71, weight 2/4; bin 9: acc 0, conf 0.62; bin 12: acc 1, conf 0.82
    assert m["ece"] == pytest.approx(0.5 * 0.21 + 0.25 * 0.62 + 0.25 * 0.18, abs=1e-6)
    expected_nll = -(math.log(0.70) + math.log(0.02) + math.log(0.08) + math.log(0.82)) / 4
    assert m["nll"] == pytest.approx(expected_nll, abs=1e-5)
    assert m["agreement"] == 0.5
    assert all(type(v) is float for v in m.values())


def test_top5_with_fewer_than_five_classes_is_top_all() -> None:
    m = classification_metrics(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([1, 0]))
    assert m["top1"] == 0.0
    assert m["top5"] == 1.0
    assert "agreement" not in m


def test_perfectly_calibrated_confident_predictions_have_zero_ece() -> None:
    logits = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    m = classification_metrics(logits, torch.tensor([0, 1]))
    assert m["top1"] == 1.0
    assert m["ece"] == pytest.approx(0.0, abs=1e-6)


def test_predict_logits_batches_and_restores_mode() -> None:
    model = Classifier(nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)), (10.0,), (5.0,), 2)
    model.train()
    x = torch.randint(0, 255, (10, 4), dtype=torch.uint8)
    logits = predict_logits(model, x, batch_size=3, device=torch.device("cpu"))
    assert model.training
    assert logits.dtype == torch.float32 and logits.shape == (10, 3)
    with torch.no_grad():
        expected = model.eval()(x.float())
    torch.testing.assert_close(logits, expected)


def test_model_cost_counts_linear_macs_for_one_sample() -> None:
    model = Classifier(nn.Linear(40, 10), (0.0,), (1.0,), 2)
    cost = model_cost(model, torch.randn(8, 40))
    assert cost == {"params": 410, "macs": 400, "flops": 800}


def test_model_cost_counts_convolutions() -> None:
    # Conv1d(3->5, k=3) on length 10: 8 outputs x 5 channels x (3 x 3) = 360 MACs, then 40x10 = 400.
    model = nn.Sequential(nn.Conv1d(3, 5, 3), nn.Flatten(), nn.Linear(40, 10))
    assert model_cost(model, torch.randn(2, 3, 10))["macs"] == 360 + 400
    # Conv2d(3->4, k=3, pad 1) on 8x8: 64 positions x 4 channels x (3 x 3 x 3) = 6912 MACs.
    conv2d = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    assert model_cost(conv2d, torch.randn(1, 3, 8, 8)) == {"params": 108, "macs": 6912, "flops": 13824}


def test_model_cost_of_torchscript_reports_params() -> None:
    model = Classifier(nn.Linear(40, 10), (0.0,), (1.0,), 2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in torch 2.14
        scripted = torch.jit.trace(model, torch.randn(2, 40))
    cost = model_cost(scripted, torch.randn(1, 40))
    assert cost["params"] == 410
    assert cost["macs"] in (400, None)


def test_size_on_disk_is_the_weights_plus_a_small_header() -> None:
    size = size_on_disk(nn.Linear(40, 10))
    assert 410 * 4 < size < 410 * 4 + 512


def test_size_on_disk_stores_tied_weights_once() -> None:
    tied = nn.Sequential(nn.Linear(64, 64, bias=False), nn.Linear(64, 64, bias=False))
    tied[1].weight = tied[0].weight
    assert 64 * 64 * 4 < size_on_disk(tied) < 2 * 64 * 64 * 4


def test_measure_speed_returns_positive_numbers() -> None:
    model = Classifier(nn.Sequential(nn.Linear(40, 32), nn.ReLU(), nn.Linear(32, 10)), (0.0,), (1.0,), 2)
    threads = torch.get_num_threads()
    speed = measure_speed(model, torch.randn(4, 40), iters=5, throughput_batch=16, threads=1)
    assert speed["latency_ms_b1"] > 0
    assert speed["throughput_per_s"] > 0
    assert speed["throughput_batch"] == 16
    assert speed["threads"] == 1
    assert torch.get_num_threads() == threads  # restored


class _Slow(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return x


def test_measure_speed_respects_the_time_budget() -> None:
    start = time.perf_counter()
    speed = measure_speed(_Slow(), torch.randn(2, 3), warmup=5, iters=30, budget_s=0.3)
    elapsed = time.perf_counter() - start
    # Without the budget: 2 x (5 + 30) forwards of 50 ms = 3.5 s. With it: ~0.3 s plus the 3-run floor.
    assert elapsed < 1.2
    assert speed["latency_ms_b1"] >= 50
