"""The transfer-set augmentations: shapes, label mixing, and what each one changes."""

from __future__ import annotations

import pytest
import torch

from core.augment import AUGMENTATIONS, build_augmenter
from core.data.base import DataSplits, Split
from core.errors import SpecError
from core.spec import (
    AugmentSpec,
    CropAug,
    CutmixAug,
    FlipAug,
    MaskAug,
    MixupAug,
    NoiseAug,
    ReplaceAug,
    ShiftAug,
)


def splits(shape: tuple[int, ...], mean: float = 0.5) -> DataSplits:
    x = torch.zeros(4, *shape)
    s = Split(x, torch.zeros(4, dtype=torch.long))
    channels = shape[0] if len(shape) == 3 else 1
    return DataSplits("t", s, s, s, 3, shape, (mean,) * channels, (2.0,) * channels)


def onehot(n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.arange(n) % 3, 3).float()


ALL: list[AugmentSpec] = [
    MixupAug(),
    CutmixAug(),
    MaskAug(),
    ReplaceAug(),
    NoiseAug(),
    ShiftAug(),
    CropAug(),
    FlipAug(),
]


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.kind)
def test_images_keep_shape_and_target_mass(spec: AugmentSpec) -> None:
    torch.manual_seed(0)
    x, y = torch.rand(16, 3, 8, 8) * 255, onehot(16)
    ax, ay = build_augmenter([spec], splits((3, 8, 8)))(x, y)  # type: ignore[misc]
    assert ax.shape == x.shape and ay.shape == y.shape
    assert torch.allclose(ay.sum(1), torch.ones(16))


@pytest.mark.parametrize("spec", [s for s in ALL if s.kind not in ("crop", "flip")], ids=lambda s: s.kind)
def test_signals(spec: AugmentSpec) -> None:
    x, y = torch.randn(16, 40), onehot(16)
    ax, ay = build_augmenter([spec], splits((40,)))(x, y)  # type: ignore[misc]
    assert ax.shape == x.shape and torch.allclose(ay.sum(1), torch.ones(16))


@pytest.mark.parametrize("spec", [CropAug(), FlipAug()], ids=lambda s: s.kind)
def test_image_only_augmentations_refuse_signals(spec: AugmentSpec) -> None:
    with pytest.raises(SpecError, match="image"):
        build_augmenter([spec], splits((40,)))


def test_mixup_mixes_inputs_and_labels_with_the_same_weights() -> None:
    torch.manual_seed(1)
    x = torch.stack([torch.full((5,), float(i)) for i in range(6)])  # row i is all i
    y = torch.nn.functional.one_hot(torch.arange(6), 6).float()
    ax, ay = build_augmenter([MixupAug(alpha=0.4)], splits((5,)))(x, y)  # type: ignore[misc]
    for row in range(6):
        weights = ay[row]
        assert float(ax[row, 0]) == pytest.approx(float((weights * torch.arange(6.0)).sum()), abs=1e-5)


def test_mask_sets_positions_to_the_mean() -> None:
    torch.manual_seed(2)
    x = torch.full((200, 50), 7.0)
    ax, _ = build_augmenter([MaskAug(prob=0.2)], splits((50,), mean=0.5))(x, onehot(200))  # type: ignore[misc]
    masked = ax == 0.5
    assert torch.all((ax == 7.0) | masked)
    assert 0.17 < float(masked.float().mean()) < 0.23


def test_image_mask_covers_all_channels_of_a_pixel() -> None:
    torch.manual_seed(3)
    x = torch.full((8, 3, 6, 6), 9.0)
    ax, _ = build_augmenter([MaskAug(prob=0.5)], splits((3, 6, 6), mean=1.0))(x, onehot(8))  # type: ignore[misc]
    masked = ax == 1.0
    assert torch.equal(masked[:, 0], masked[:, 1]) and torch.equal(masked[:, 1], masked[:, 2])


def test_shift_is_a_circular_roll_per_sample() -> None:
    torch.manual_seed(4)
    x = torch.arange(10.0).repeat(32, 1)
    ax, _ = build_augmenter([ShiftAug(max_shift=2)], splits((10,)))(x, onehot(32))  # type: ignore[misc]
    for row in ax:
        s = int((row[0] - 0) % 10)  # value at position 0 tells the shift
        assert torch.equal(row, torch.roll(torch.arange(10.0), -s)) and s in (0, 1, 2, 8, 9)


def test_crop_is_a_translation_with_zero_fill() -> None:
    torch.manual_seed(5)
    x = torch.ones(16, 1, 6, 6)
    ax, _ = build_augmenter([CropAug(padding=2)], splits((1, 6, 6)))(x, onehot(16))  # type: ignore[misc]
    zeros = (ax == 0).flatten(1).sum(1)
    assert torch.all(zeros <= 6 * 6 - 4 * 4) and bool((zeros > 0).any())


def test_flip_mirrors_width() -> None:
    x = torch.arange(4.0).reshape(1, 1, 1, 4).repeat(2, 1, 1, 1)
    ax, _ = build_augmenter([FlipAug(prob=1.0)], splits((1, 1, 4)))(x, onehot(2))  # type: ignore[misc]
    assert torch.equal(ax[0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))


def test_cutmix_label_weights_match_the_pasted_area() -> None:
    torch.manual_seed(6)
    x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
    y = torch.eye(2)
    for _ in range(5):
        ax, ay = build_augmenter([CutmixAug()], splits((1, 8, 8)))(x, y)  # type: ignore[misc]
        for row in range(2):
            other = 1 - row
            pasted = float((ax[row] == other).float().mean())
            assert float(ay[row, other]) == pytest.approx(pasted, abs=1e-6)


def test_no_augmentation_is_none() -> None:
    assert build_augmenter([], splits((4,))) is None


def test_every_augmentation_kind_is_registered() -> None:
    from typing import get_args

    union = get_args(get_args(AugmentSpec)[0])
    assert {get_args(c.model_fields["kind"].annotation)[0] for c in union} == set(AUGMENTATIONS.names())
