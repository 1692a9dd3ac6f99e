"""The encoder contract every backbone follows: images in [0, 1] -> feature map and pooled features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Encoder(nn.Module):
    """A backbone with its input normalisation built in.

    Normalisation lives in the module (as buffers) so a checkpointed encoder works on raw [0, 1]
    images anywhere, with no data config needed to use it.
    """

    def __init__(self, body: nn.Module, out_dim: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.body = body
        self.out_dim = out_dim
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def feature_map(self, images: Tensor) -> Tensor:
        """[B, C, H, W] images in [0, 1] -> [B, out_dim, h, w] (kept for dense tasks)."""
        return self.body((images - self.mean) / self.std)

    def forward(self, images: Tensor) -> Tensor:
        """[B, C, H, W] images in [0, 1] -> pooled features [B, out_dim]."""
        return self.feature_map(images).mean(dim=(2, 3))
