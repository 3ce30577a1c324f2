from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from core.compress import (
    MaskHold,
    compress_model,
    compressed_size,
    count_nonzero_params,
    describe_compression,
    prunable_count,
    prune_to_count,
    sparsity,
)
from core.evaluate import model_cost, predict_logits
from core.models.base import Classifier
from core.spec import DynamicInt8Compress, PruneCompress

CPU = torch.device("cpu")


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian blobs in 20 dimensions, in raw units (offset and scaled)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 20, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.randint(0, 3, (n,), generator=g)
    return 10 + 5 * (centers[y] + torch.randn(n, 20, generator=g)), y


def _trained_mlp() -> Classifier:
    torch.manual_seed(0)
    x, y = _blobs(600, seed=1)
    model = Classifier(
        nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 3)), (10.0,), (15.0,), rank=2
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    logits = predict_logits(model, x, batch_size=256, device=CPU)
    return float((logits.argmax(dim=1) == y).double().mean())


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_int8_keeps_the_accuracy_and_the_original() -> None:
    model = _trained_mlp()
    before = _snapshot(model)
    x, y = _blobs(400, seed=2)
    quantized = compress_model(model, DynamicInt8Compress())
    _assert_unchanged(model, before)
    assert quantized is not model
    float_acc, int8_acc = _accuracy(model, x, y), _accuracy(quantized, x, y)
    assert float_acc > 0.95
    assert abs(int8_acc - float_acc) <= 0.02
    # The int8 Linears still cost their MACs, and weigh about a quarter of the float weights.
    assert model_cost(quantized, x)["macs"] == model_cost(model, x)["macs"] == 20 * 32 + 32 * 3
    info = describe_compression(model, quantized, DynamicInt8Compress())
    assert info["kind"] == "dynamic_int8"
    assert "2 Linear layer(s) quantized" in info["note"]
    assert info["params_nonzero"] > 0.95 * (20 * 32 + 32 + 32 * 3 + 3)
    assert info["size_bytes"] == compressed_size(quantized, DynamicInt8Compress())


def test_int8_without_linear_layers_returns_a_copy() -> None:
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.AdaptiveAvgPool1d(1), nn.Flatten())
    copy_ = compress_model(model, DynamicInt8Compress())
    assert copy_ is not model
    x = torch.randn(2, 1, 8)
    torch.testing.assert_close(copy_(x), model(x))
    assert "no Linear layer" in describe_compression(model, copy_, DynamicInt8Compress())["note"]


def test_prune_half_of_the_weights_globally() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 10))
    before = _snapshot(model)
    pruned = compress_model(model, PruneCompress(amount=0.5))
    _assert_unchanged(model, before)
    assert pruned.state_dict().keys() == before.keys()  # permanent: no weight_orig / weight_mask left
    weights = 4 * 2 * 3 + 10 * 24  # 264 prunable weights, 132 of them zeroed
    assert sparsity(pruned) == pytest.approx(132 / weights)
    assert sparsity(model) == 0.0
    info = describe_compression(model, pruned, PruneCompress(amount=0.5))
    assert info["params_nonzero"] == 132 + 4 + 10  # the biases are not pruned
    assert info["sparsity"] == pytest.approx(0.5)
    # Global: the kept weights are the largest magnitudes across both layers.
    kept = torch.cat([pruned[0].weight.flatten(), pruned[2].weight.flatten()])
    dropped = torch.cat([model[0].weight.flatten(), model[2].weight.flatten()])[kept == 0]
    assert dropped.abs().max() <= kept[kept != 0].abs().min()


def test_pruned_size_counts_nonzero_values_and_a_bitmask() -> None:
    torch.manual_seed(0)
    pruned = compress_model(nn.Linear(40, 10), PruneCompress(amount=0.5))
    # weight: 200 nonzeros x 4 bytes + ceil(400 / 8) bytes of mask; bias: 10 x 4 bytes, dense.
    assert compressed_size(pruned, PruneCompress(amount=0.5)) == 200 * 4 + math.ceil(400 / 8) + 10 * 4


def test_prune_to_count_leaves_exactly_the_asked_nonzero_parameters() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 8, 3), nn.BatchNorm1d(8), nn.Flatten(), nn.Linear(8 * 6, 10))
    assert prunable_count(model) == (8 * 2 * 3 + 10 * 48, 8 + 16 + 10)  # BN weight is not a Conv/Linear
    assert count_nonzero_params(prune_to_count(model, 300)) == 300 - 8  # BN biases start at zero
    with torch.no_grad():
        model[1].bias.fill_(0.1)  # as after training
    pruned = prune_to_count(model, 300)
    assert count_nonzero_params(pruned) == 300
    assert sum(p.numel() for p in pruned.parameters()) == sum(p.numel() for p in model.parameters())
    # the 300 - 34 weights kept are the largest magnitudes across both layers
    kept = torch.cat([pruned[0].weight.flatten(), pruned[3].weight.flatten()])
    original = torch.cat([model[0].weight.flatten(), model[3].weight.flatten()])
    assert int((kept != 0).sum()) == 266
    assert original[kept == 0].abs().max() <= original[kept != 0].abs().min()
    for impossible in (34, 528 + 34):  # no weight left; nothing pruned
        with pytest.raises(ValueError, match="cannot prune"):
            prune_to_count(model, impossible)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_the_mask_holds_through_fine_tuning(optimizer: str) -> None:
    model = prune_to_count(_trained_mlp(), 400)
    zeros = {name: (p == 0) for name, p in model.named_parameters() if name.endswith("weight")}
    keys = set(model.state_dict())
    x, y = _blobs(200, seed=3)
    params = list(model.parameters())
    opt: torch.optim.Optimizer = (
        torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
        if optimizer == "adamw"
        else torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)
    )

    def train(steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

    hold = MaskHold(model)
    train(20)
    hold.close()
    assert set(model.state_dict()) == keys  # no mask or orig tensors: loads into the plain model
    for name, p in model.named_parameters():
        if name in zeros:
            assert bool((p[zeros[name]] == 0).all()), name
            assert bool((p[~zeros[name]] != 0).any()), name  # the kept weights did train
    assert count_nonzero_params(model) <= 400
    # without the hold, the same training moves pruned weights: the test can tell
    train(1)
    assert any(bool((p[zeros[n]] != 0).any()) for n, p in model.named_parameters() if n in zeros)
