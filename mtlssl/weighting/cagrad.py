"""CAGrad, conflict-averse gradient descent (Liu et al., "Conflict-Averse Gradient Descent for Multi-task
Learning", NeurIPS 2021).

Within a ball of radius c ||g0|| around the mean gradient g0 = mean_t g_t, CAGrad takes the direction that
maximises the worst task's improvement min_t g_t . d. Its dual is the T-dimensional problem
    w = argmin_{w in simplex} g_w . g0 + sqrt(phi) ||g_w||,   g_w = sum_t w_t g_t,   phi = c^2 ||g0||^2,
and the update is d = g0 + sqrt(phi) / ||g_w|| * g_w. c = 0 is plain gradient averaging; c -> infinity
approaches MGDA. The official code (``cagrad(grads, alpha=0.5, rescale=1)``) then divides d by 1 + c^2
(``rescale=1``, its default and the one used here by default), by 1 + c (``rescale=2``) or by nothing
(``rescale=0``), to keep the step size comparable across c.

The dual is solved exactly (see ``solvers.cagrad_dual``), on a Gramian accumulated in float64, instead of with
the official scipy SLSQP call, and without its 1e-8 smoothing terms. The direction is built as g0 + lambda g_w
from the two vectors, with lambda capped at sqrt(phi) / ||g_w|| for the g_w actually computed (the official
code also measures ||g_w|| on the vector: ``lmbda = c / (gw_norm + 1e-4)``). So d stays in the ball even when 0
is in the convex hull up to round-off, where g_w is round-off and a lambda found from G would be huge.
``last_weights`` holds the weights of the raw g_t in the returned direction, (1/T + lambda w) / rescale. One
task, or identical gradients g: d = (1 + c) g before the rescaling, i.e. 1.2 g with the defaults.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting import solvers
from mtlssl.weighting.base import GradientWeighting


class CAGrad(GradientWeighting):
    def __init__(self, num_tasks: int, c: float = 0.5, rescale: int = 1) -> None:
        super().__init__(num_tasks)
        if not c >= 0:
            raise UserError(f"weighting.c must be >= 0 (the radius of the ball around the mean gradient; got {c})")
        if rescale not in (0, 1, 2):
            raise UserError(
                f"weighting.rescale must be 0 (none), 1 (divide by 1 + c^2) or 2 (divide by 1 + c); got {rescale}"
            )
        self.c = float(c)
        self.rescale = int(rescale)

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        grads = jacobian.detach()
        t = grads.shape[0]
        w, lam = solvers.cagrad_dual(solvers.gramian(grads, float64=True), self.c)
        mean = torch.full((t,), 1.0 / t, dtype=grads.dtype, device=grads.device)
        g0, g_w = mean @ grads, torch.as_tensor(w).to(grads) @ grads  # two products: lambda w may be huge
        norm = float(g_w.double().norm())
        if norm > 0:  # the step lambda g_w never leaves the ball, whatever the round-off in g_w
            lam = min(lam, self.c * float(g0.double().norm()) / norm)
        elif np.isfinite(norm):
            lam = 0.0
        scale = (1.0, 1.0 + self.c**2, 1.0 + self.c)[self.rescale]
        self.last_weights = torch.as_tensor((1.0 / t + lam * w) / scale).to(grads)
        return (g0 + lam * g_w) / scale
