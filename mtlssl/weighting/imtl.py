"""IMTL, hybrid Impartial Multi-Task Learning (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning").

The paper's full method combines its two halves:

- IMTL-L (loss balance): each task has a learnable log-scale s_t and contributes e^{s_t} L_t - s_t. For
  fixed L_t the minimiser is e^{s_t} L_t = 1, so the scaled losses are driven to a common value.
- IMTL-G (gradient balance, see ``imtl_g``) on the gradients of the *scaled* losses, e^{s_t} g_t: the
  direction is sum_t alpha_t e^{s_t} g_t with alpha from the IMTL-G closed form.

Under this runner's interface the engine passes the raw gradients g_t and losses L_t, so ``aggregate``:

1. scales row t of the Jacobian by e^{s_t} and returns the IMTL-G combination of the scaled rows;
2. sets ``log_scales.grad`` to the closed-form gradient of sum_t (e^{s_t} L_t - s_t) with respect to s,
   i.e. e^{s_t} L_t - 1, so the stage's optimizer (which holds this module's parameters) updates s in its
   step. The gradient is *assigned*, not accumulated: nothing else differentiates s here, and assigning keeps
   it right whether or not the engine zeroes gradients before calling ``aggregate``.

This is LibMTL's IMTL (scaled losses, IMTL-G on their shared-parameter gradients, s trained by the model's
optimizer). ``last_weights`` holds the weights of the raw g_t in the direction: alpha_t e^{s_t}. A task whose
gradient is exactly zero (no label in the batch) is left out of the IMTL-G solve with alpha_t = 0, as in
``imtl_g``; its scale s_t still trains on its loss.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mtlssl.errors import UserError
from mtlssl.weighting.base import GradientWeighting
from mtlssl.weighting.imtl_g import IMTLG


class IMTL(GradientWeighting):
    """IMTL-G on the gradients of the IMTL-L-scaled losses e^{s_t} L_t, with learnable log-scales s.

    ``init_log_scale`` is s at the start: 0 (scale 1), as in the paper and LibMTL. With one task the
    direction is e^{s_1} g_1 (IMTL-G of one gradient is that gradient).
    """

    def __init__(self, num_tasks: int, init_log_scale: float = 0.0) -> None:
        super().__init__(num_tasks)
        if not math.isfinite(init_log_scale):
            raise UserError(f"weighting.init_log_scale must be a finite number (got {init_log_scale})")
        self.log_scales = nn.Parameter(torch.full((num_tasks,), float(init_log_scale)))

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        s = self.log_scales.detach()
        scales = s.exp()
        scaled = jacobian.detach() * scales.to(jacobian)[:, None]
        alpha = IMTLG.weights(scaled).to(s)
        # d/ds_t sum_k (e^{s_k} L_k - s_k) = e^{s_t} L_t - 1 (the IMTL-L loss's gradient, in closed form).
        self.log_scales.grad = scales * losses.detach().to(s) - 1.0
        weights = alpha * scales
        self.last_weights = weights.to(self.last_weights)
        # Heads follow the gradient of the scaled loss e^{s_t} L_t - s_t (the paper's Algorithm 1, LibMTL).
        self._set_task_specific_weights(scales, losses)
        return weights.to(jacobian) @ jacobian.detach()
