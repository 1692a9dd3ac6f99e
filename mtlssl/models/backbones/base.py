"""The backbone contract: images in [0, 1] -> every stage's feature map, with the input normalisation built in.

Normalisation lives in the module (as buffers), so a checkpointed or exported backbone works on raw [0, 1]
images anywhere, with no data config needed to use it. Each stage's channels and stride (relative to the
input) are known, so an architecture can attach to any stage (task attention, dense decoders).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class Backbone(nn.Module, ABC):
    def __init__(self, mean: Sequence[float], std: Sequence[float], stage_channels: Sequence[int],
                 stage_strides: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.stage_channels = tuple(stage_channels)
        self.stage_strides = tuple(stage_strides)

    @property
    def out_dim(self) -> int:
        """Channels of the last stage: the size of the pooled features."""
        return self.stage_channels[-1]

    @abstractmethod
    def stages(self, x: Tensor) -> list[Tensor]:
        """Normalised images -> each stage's output, first to last."""

    def feature_maps(self, images: Tensor) -> list[Tensor]:
        """[B, C, H, W] images in [0, 1] -> each stage's [B, stage_channels[i], H / stride, W / stride]."""
        return self.stages((images - self.mean) / self.std)

    def pool(self, feature_map: Tensor) -> Tensor:
        """The last stage's map -> pooled features [B, out_dim] (global average)."""
        return feature_map.mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        """[B, C, H, W] images in [0, 1] -> pooled features [B, out_dim]."""
        return self.pool(self.feature_maps(images)[-1])

    def export_state(self) -> dict[str, Tensor]:
        """The weights under the names other libraries use (the normalisation goes in the export's metadata)."""
        return {k: v for k, v in self.state_dict().items() if k not in ("mean", "std")}
