"""IMTL-L, the loss-balance half of Impartial Multi-Task Learning (Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang,
ICLR 2021, "Towards Impartial Multi-task Learning").

Each task k has a learned log-scale s_k (starting at ``init_log_scale``, 0 in the paper) and the loss is

    sum_k (exp(s_k) L_k - s_k).

The s_k are trained with the model. For fixed losses the minimiser in s_k solves exp(s_k) L_k = 1, so the scaled
losses exp(s_k) L_k are all driven to the same value: the paper's "impartial" loss balance. ``last_weights``
holds the scales exp(s_k).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mtlssl.errors import UserError
from mtlssl.weighting.base import LossWeighting


class IMTLL(LossWeighting):
    def __init__(self, num_tasks: int, init_log_scale: float = 0.0) -> None:
        super().__init__(num_tasks)
        if not math.isfinite(init_log_scale):
            raise UserError(f"weighting.init_log_scale must be a finite number (got {init_log_scale}); "
                            "IMTL-L starts at 0, i.e. scale 1")
        self.log_scales = nn.Parameter(torch.full((num_tasks,), float(init_log_scale)))

    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        scales = torch.exp(self.log_scales)
        self.last_weights = scales.detach().clone()
        # The -s_k term keeps the scales from collapsing to 0 (which would trivially minimise exp(s_k) L_k).
        return (scales * losses - self.log_scales).sum()
