"""Random Loss Weighting (RLW; Lin, Ye, Zhang & Tsang, TMLR 2022, "Reasonable Effectiveness of Random Weighting:
A Litmus Test for Multi-Task Learning"; first circulated as "A Closer Look at Loss Weighting in Multi-Task Learning").

At every step fresh weights are drawn and normalised onto the simplex,

    w = softmax(z),  z ~ N(0, I_K),      loss = sum_k w_k L_k,

the paper's default (normal) sampling distribution. The draws come from ``self.generator`` (the run's seeded
generator, on the losses' device) so a run repeats exactly; without one (unit tests) the global RNG is used.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlssl.weighting.base import LossWeighting


class RLW(LossWeighting):
    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        z = torch.randn(self.num_tasks, generator=self.generator, device=losses.device, dtype=losses.dtype)
        # The weights are random constants: no gradient flows into them, as in the paper.
        weights = torch.softmax(z, dim=0)
        self.last_weights = weights.detach().clone()
        return (weights * losses).sum()
