"""GradDrop, gradient sign dropout (Chen et al., NeurIPS 2020, "Just Pick a Sign: Optimizing Deep Multitask
Models with Gradient Sign Dropout").

Per coordinate k of the shared gradient, the sign purity of the task gradients g_1..g_T is

    P_k = 0.5 * (1 + sum_i g_ik / sum_i |g_ik|)      (in [0, 1]; 0.5 where every g_ik is 0),

and one uniform U_k ~ [0, 1) is drawn. Where U_k < P_k only the positive task gradients pass, elsewhere
only the negative ones (mask M_ik). With leak l in [0, 1] the direction is

    d = sum_i (l + (1 - l) * M_i) * g_i,

so l = 0 is pure sign dropout and l = 1 the plain sum. The paper applies GradDrop to the gradients of an
activation layer (per example, summed over the batch); this runner has the per-task gradients of the shared
*parameters*, so the mask is applied to the parameter Jacobian, the usual practice in parameter-gradient
MTL libraries (e.g. LibMTL's "rep_grad=False" comparisons). Determinism comes from ``self.generator``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import GradientWeighting


class GradDrop(GradientWeighting):
    """Keep, per coordinate, only the task gradients of one sign, chosen with probability equal to its purity.

    GradDrop defines no per-task weights (the mask is per coordinate), so ``last_weights`` stays at ones.
    With one task P is exactly 1 or 0 where g is positive or negative, so the direction is the gradient.
    """

    def __init__(self, num_tasks: int, leak: float = 0.0) -> None:
        super().__init__(num_tasks)
        if not (math.isfinite(leak) and 0.0 <= leak <= 1.0):
            raise UserError(f"weighting.leak must be in [0, 1] (got {leak}); set e.g. weighting.leak=0 "
                            "(pure sign dropout, the paper's main setting)")
        self.leak = float(leak)

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        grads = jacobian.detach()
        total, magnitude = grads.sum(0), grads.abs().sum(0)
        # Where every gradient is 0, total is 0 too and the clamp only avoids 0/0: purity 0.5 there.
        purity = 0.5 * (1.0 + total / magnitude.clamp_min(torch.finfo(grads.dtype).tiny))
        gen = self.generator
        draw = torch.rand(purity.shape, generator=gen, device=gen.device if gen is not None else grads.device)
        keep_positive = draw.to(device=grads.device, dtype=grads.dtype) < purity
        mask = torch.where(keep_positive, grads > 0, grads < 0).to(grads.dtype)
        return (grads * (self.leak + (1.0 - self.leak) * mask)).sum(0)
