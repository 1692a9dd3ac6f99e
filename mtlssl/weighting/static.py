"""Static weighting: fixed per-task weights from the config, in the order of ``tasks``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import LossWeighting


class Static(LossWeighting):
    def __init__(self, num_tasks: int, weights: Sequence[float]) -> None:
        super().__init__(num_tasks)
        weights = list(weights)
        example = f"weighting.weights=[{','.join(['1'] * num_tasks)}]"
        if len(weights) != num_tasks:
            raise UserError(
                f"weighting.weights has {len(weights)} values for {num_tasks} tasks; "
                f"give one weight per task, in the order of `tasks`, e.g. {example}"
            )
        if not all(math.isfinite(w) and w >= 0 for w in weights):
            raise UserError(f"weighting.weights must be finite and >= 0 (got {weights}); e.g. {example}")
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.last_weights = self.weights.clone()

    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        return (self.weights.to(losses.dtype) * losses).sum()
