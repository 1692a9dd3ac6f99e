"""Uncertainty weighting (UW; Kendall, Gal & Cipolla, CVPR 2018).

Each task t has a learned log-variance s_t = log sigma_t^2 and the loss is
    sum_t 0.5 * exp(-s_t) * L_t + 0.5 * s_t,
the paper's Gaussian-likelihood form (1 / (2 sigma^2) L + log sigma), as in LibMTL. The s_t are
trained with the model (they are parameters of this module) and start at ``init_log_var``.
"""

import torch
from torch import Tensor, nn

from mtlssl.weighting.base import LossWeighting


class Uncertainty(LossWeighting):
    def __init__(self, num_tasks: int, init_log_var: float = 0.0) -> None:
        super().__init__(num_tasks)
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init_log_var)))

    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        precision = 0.5 * torch.exp(-self.log_vars)
        self.last_weights = precision.detach().clone()
        return (precision * losses + 0.5 * self.log_vars).sum()
