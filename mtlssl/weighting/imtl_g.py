"""IMTL-G, the gradient half of Impartial Multi-Task Learning (Liu et al., ICLR 2021, "Towards Impartial
Multi-task Learning").

IMTL-G picks the direction d = sum_t alpha_t g_t, sum_t alpha_t = 1, whose projections onto every unit task
gradient u_t = g_t / ||g_t|| are equal (d . u_i = d . u_j): no task is favoured by the update. With
D = [g_1 - g_t]^T and U = [u_1 - u_t]^T for t = 2..T (rows), the closed form is

    alpha_{2:T} = g_1 U^T (D U^T)^{-1},    alpha_1 = 1 - sum_t alpha_{2:T}.

The solve runs in float64 with a pseudo-inverse: when D U^T is singular (e.g. two identical task gradients,
whose difference rows are 0) the minimum-norm alpha still gives a direction with the defining property.

The condition is defined for non-zero gradients only. A task whose gradient is exactly zero (e.g. no label
of it in the batch, common with partially labelled data) has no unit vector; kept in, it forces d . u_t = 0
for every task and so d = 0. Such tasks are left out of the solve with alpha_t = 0, and the others are
balanced among themselves, as ``solvers.nash_weights`` does for Nash-MTL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlssl.weighting.base import GradientWeighting


class IMTLG(GradientWeighting):
    """IMTL-G: the convex-affine combination of the task gradients with equal projections on all of them.

    ``last_weights`` holds alpha (sum 1 over the tasks with a non-zero gradient, 0 for the others). With one
    task, or identical task gradients, the direction is that gradient; with every gradient zero it is 0.
    """

    @staticmethod
    def weights(jacobian: Tensor) -> Tensor:
        """The IMTL-G weights alpha [T] (float64) of the task gradients ``jacobian`` [T, P]: summing to 1 over
        the non-zero gradients, 0 for zero ones (all 0 when every gradient is 0)."""
        grads = jacobian.detach().double()
        t = grads.shape[0]
        norms = grads.norm(dim=1, keepdim=True)
        active = norms[:, 0] > 0
        if not bool(active.all()):  # zero gradients have no direction: solve for the others, alpha_t = 0
            alpha = torch.zeros(t, dtype=torch.float64, device=grads.device)
            if bool(active.any()):
                alpha[active] = IMTLG.weights(grads[active])
            return alpha
        if t == 1:
            return torch.ones(1, dtype=torch.float64, device=grads.device)
        units = grads / norms
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
