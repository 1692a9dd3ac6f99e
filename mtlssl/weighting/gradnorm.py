"""GradNorm (Chen et al., ICML 2018, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
Multitask Networks").

Task weights w (init 1) are learned so that the weighted task gradients train at balanced rates. At step k,
with L_t(0) the losses of the first step:

    G_t = ||w_t g_t||,   G_bar = mean_t G_t,   r_t = (L_t / L_t(0)) / mean_s (L_s / L_s(0)),
    L_grad = sum_t | G_t - G_bar * r_t^alpha |        (the target G_bar r_t^alpha held constant)

The direction of this step uses the current weights, d = sum_t w_t g_t; then w takes one gradient-descent
step on L_grad, dL_grad/dw_t = sign(G_t - target_t) ||g_t||, and is renormalised to sum_t w_t = T.

Choices under this interface (documented deviations):
- g_t are the full shared-parameter rows of the Jacobian. The paper uses the last shared layer's weights only
  (a cost saving); LibMTL, like us, uses all shared parameters.
- w is a buffer updated here by plain SGD with its own ``lr`` rather than a parameter of the network's
  optimizer (the paper uses the network's optimizer and learning rate). Keeping it out of the stage's
  optimizer avoids weight decay, momentum and LR schedules on w, and makes the rule explicit.
- After the step w is floored at 1e-8 before renormalising: the paper leaves positivity implicit, and a
  negative weight would flip a task's gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import GradientWeighting


class GradNorm(GradientWeighting):
    """Learn task weights so that the weighted gradient norms follow the tasks' relative training rates.

    ``alpha`` (paper default 1.5 for NYUv2) is the strength of the restoring force towards a common training
    rate (0 asks for equal weighted gradient norms). ``lr`` is the SGD step size of the weights. ``last_weights``
    holds the weights used for the returned direction. With one task w stays 1 and the direction is g.
    """

    def __init__(self, num_tasks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(num_tasks)
        if not (math.isfinite(alpha) and alpha >= 0):
            raise UserError(f"weighting.alpha (GradNorm's restoring force) must be >= 0 (got {alpha})")
        if not (math.isfinite(lr) and lr > 0):
            raise UserError(f"weighting.lr (the step size of the task weights) must be > 0 (got {lr})")
        self.alpha, self.lr = float(alpha), float(lr)
        self.register_buffer("weights", torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.ones(num_tasks))
        self.register_buffer("started", torch.tensor(False))

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        grads, given = jacobian.detach(), losses
        losses = losses.detach().to(self.weights)
        if not self.started:
            self.initial_losses.copy_(losses)
            self.started.fill_(True)
        w = self.weights.clone()
        direction = w.to(grads) @ grads  # this step's loss sum_t w_t L_t uses the current weights

        norms = grads.norm(dim=1).to(w)
        g_w = w * norms
        # Inverse training rates; a zero initial loss (already solved) is treated as no progress to make.
        rates = losses / self.initial_losses.clamp_min(torch.finfo(w.dtype).tiny)
        mean_rate = rates.mean()
        relative = rates / mean_rate if mean_rate > 0 else torch.ones_like(rates)
        target = g_w.mean() * relative.pow(self.alpha)
        step = torch.sign(g_w - target) * norms  # dL_grad/dw_t with the target held constant
        updated = (w - self.lr * step).clamp_min(1e-8)
        self.weights.copy_(updated * self.num_tasks / updated.sum())
        self.last_weights = w.to(self.last_weights)
        self._set_task_specific_weights(w, given)  # the paper descends sum_t w_t L_t over the whole network
        return direction
