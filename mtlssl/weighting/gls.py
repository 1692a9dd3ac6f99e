"""Geometric Loss Strategy (GLS; Chennupati, Sistu, Yogamani & Rawashdeh, CVPR Workshops 2019, "MultiNet++:
Multi-Stream Feature Aggregation and Geometric Loss Strategy for Multi-Task Learning").

The loss is the geometric mean of the task losses,

    L = (prod_k L_k)^(1/K) = exp(mean_k log L_k),

computed in the log domain so that the product can neither overflow nor underflow. Its gradient with respect to
L_k is L / (K L_k): the method implicitly weights each task by the inverse of its own loss, and ``last_weights``
holds these effective weights. The losses must be positive (a zero loss makes the product 0 and the gradient
undefined).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlssl.weighting.base import LossWeighting


class GLS(LossWeighting):
    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        total = torch.exp(torch.log(losses).mean())
        self.last_weights = (total / (self.num_tasks * losses)).detach()
        return total
