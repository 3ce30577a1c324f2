"""The wrapper every trained model lives in: raw inputs in, logits out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn


class Classifier(nn.Module):
    """Normalizes raw inputs with the training split's statistics, then runs ``net``.

    Module paths in feature losses (``hint``, ``attention``) are relative to ``net``. Because the
    normalization is part of the module, an exported model takes the dataset's raw inputs.
    """

    if TYPE_CHECKING:  # buffers, typed for mypy only: TorchScript cannot read string annotations
        mean: torch.Tensor
        inv_std: torch.Tensor

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], rank: int) -> None:
        super().__init__()
        self.net = net
        shape = (1, len(mean), 1, 1) if rank == 3 else (1, 1)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.float() - self.mean) * self.inv_std)
