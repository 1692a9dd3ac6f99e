"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

The update d = sum_t alpha_t g_t is the Nash bargaining solution among the tasks: alpha > 0 solves
    G alpha = 1 / alpha   (elementwise; G = J J^T),
i.e. every task's share of the step, g_t . d = 1 / alpha_t, is balanced so that sum_t log(g_t . d) is
maximal among directions of the same norm. As in the official code (``NashMTL`` in methods/weight_methods.py):
- G is divided by its Frobenius norm before solving, for conditioning; alpha is converted back so that it
  solves the bargaining condition for the raw G, as the official constraints alpha_t (G alpha)_t >= 1 do;
- alpha is re-solved only every ``update_every`` steps (``update_weights_every``) and reused in between,
  which amortises the solver; the solver is warm-started from the last alpha;
- the final direction is clipped to norm ``max_norm`` (the official ``clip_grad_norm_`` on the shared
  parameters, whose gradient is exactly this direction; 0 disables it);
- ``optim_niter`` bounds the solver's iterations; after that the last iterate is used.
The official code solves a sequence of convex cvxpy/ECOS problems; here G alpha = 1 / alpha is solved by
damped Newton on its convex potential (``solvers.nash_weights``), with no cvxpy. When no solution exists
(0 is in the convex hull of the gradients: a Pareto-stationary point) the iterate grows along the null
combination, whose contribution to d is 0, and the next solve starts afresh; a task whose gradient is
exactly zero (absent from the batch) gets alpha_t = 0 and the others bargain among themselves.
``alpha`` and the step counter are buffers; ``last_weights`` holds the weights of the raw g_t in the
returned direction, alpha times the clipping factor. One task: alpha = 1 / ||g||, so d = g / ||g||, of norm 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting import solvers
from mtlssl.weighting.base import GradientWeighting


class NashMTL(GradientWeighting):
    def __init__(self, num_tasks: int, update_every: int = 1, max_norm: float = 1.0, optim_niter: int = 20) -> None:
        super().__init__(num_tasks)
        if not (isinstance(update_every, int) and update_every >= 1):
            raise UserError(f"weighting.update_every must be an integer >= 1 (got {update_every})")
        if not max_norm >= 0:
            raise UserError(f"weighting.max_norm must be >= 0, 0 disabling the clipping (got {max_norm})")
        if not (isinstance(optim_niter, int) and optim_niter >= 1):
            raise UserError(f"weighting.optim_niter must be an integer >= 1 (got {optim_niter})")
        self.update_every = update_every
        self.max_norm = float(max_norm)
        self.optim_niter = optim_niter
        self.register_buffer("alpha", torch.ones(num_tasks, dtype=torch.float64))  # official start: ones
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # Whether alpha is a converged solution, and so a good warm start for the next solve.
        self.register_buffer("converged", torch.zeros((), dtype=torch.bool))

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        if int(self.step) % self.update_every == 0:
            gram = solvers.gramian(jacobian)
            scale = float(np.linalg.norm(gram))  # Frobenius norm, the official normalisation_factor
            # A zero Jacobian has nothing to balance, and a non-finite one (e.g. an AMP overflow, a step the
            # engine will skip) must not corrupt the state: keep the last alpha in both cases.
            if scale > 0 and np.isfinite(scale):
                init = self.alpha.cpu().numpy() if bool(self.converged) else None
                alpha, ok = solvers.nash_weights(gram / scale, init, self.optim_niter)
                # G/s a = 1/a  <=>  G (a / sqrt(s)) = 1 / (a / sqrt(s)): back to the raw Gramian.
                self.alpha.copy_(torch.from_numpy(alpha / np.sqrt(scale)))
                self.converged.fill_(ok)
        self.step += 1
        direction, weights = solvers.combine(self.alpha.cpu().numpy(), jacobian)
        # The official backward of sum_t alpha_t L_t reaches the heads; its clipping acts on the shared ones only.
        self._set_task_specific_weights(weights, losses)
        if self.max_norm > 0:  # torch.nn.utils.clip_grad_norm_'s rule, as in the official backward()
            coef = (self.max_norm / (direction.norm() + 1e-6)).clamp(max=1.0)
            direction, weights = direction * coef, weights * coef
        self.last_weights = weights
        return direction
