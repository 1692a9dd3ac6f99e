"""IMTL-G, the gradient half of Impartial Multi-Task Learning (Liu et al., ICLR 2021, "Towards Impartial
Multi-task Learning").

IMTL-G picks the direction d = sum_t alpha_t g_t, sum_t alpha_t = 1, whose projections onto every unit task
gradient u_t = g_t / ||g_t|| are equal (d . u_i = d . u_j): no task is favoured by the update. With
D = [g_1 - g_t]^T and U = [u_1 - u_t]^T for t = 2..T (rows), the closed form is

    alpha_{2:T} = g_1 U^T (D U^T)^{-1},    alpha_1 = 1 - sum_t alpha_{2:T}.

The solve runs in float64 with a pseudo-inverse: when D U^T is singular (e.g. two identical task gradients,
whose difference rows are 0) the minimum-norm alpha still gives a direction with the defining property.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlssl.weighting.base import GradientWeighting


class IMTLG(GradientWeighting):
    """IMTL-G: the convex-affine combination of the task gradients with equal projections on all of them.

    ``last_weights`` holds alpha (sum 1). With one task, or identical task gradients, the direction is that
    gradient.
    """

    @staticmethod
    def weights(jacobian: Tensor) -> Tensor:
        """The IMTL-G weights alpha [T] (float64, summing to 1) of the task gradients ``jacobian`` [T, P]."""
        grads = jacobian.detach().double()
        t = grads.shape[0]
        if t == 1:
            return torch.ones(1, dtype=torch.float64, device=grads.device)
        norms = grads.norm(dim=1, keepdim=True)
        # A zero gradient has no direction: its unit vector is taken as 0 rather than 0/0.
        units = grads / norms.clamp_min(torch.finfo(torch.float64).tiny)
        d = grads[:1] - grads[1:]  # [T-1, P]
        u = units[:1] - units[1:]  # [T-1, P]
        # alpha (D U^T) = g_1 U^T  <=>  (D U^T)^T alpha^T = U g_1
        rest = torch.linalg.pinv((d @ u.T).T) @ (u @ grads[0])
        return torch.cat([(1 - rest.sum()).reshape(1), rest])

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        alpha = self.weights(jacobian)
        self.last_weights = alpha.to(self.last_weights)
        return alpha.to(jacobian) @ jacobian.detach()
