"""PCGrad, projecting conflicting gradients (Yu et al., NeurIPS 2020, "Gradient Surgery for Multi-Task Learning").

For each task i, starting from g_i' = g_i, visit the other tasks j in a uniformly random order and, when
g_i' . g_j < 0, project g_i' onto the normal plane of the *original* g_j:

    g_i' <- g_i' - (g_i' . g_j / ||g_j||^2) g_j.

The update direction is the *sum* of the projected gradients, sum_i g_i' (the paper's Algorithm 1 and
LibMTL both sum; with no conflicts this is the plain sum of the task gradients, i.e. equal weighting).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtlssl.weighting.base import GradientWeighting


class PCGrad(GradientWeighting):
    """Gradient surgery: drop the component of each task gradient that conflicts with another task's.

    ``last_weights`` holds w with direction = sum_t w_t g_t (1 for every task when nothing conflicts).
    The random visiting orders come from ``self.generator`` (the global RNG when it is unset).
    With one task the direction is that task's gradient.
    """

    @staticmethod
    def coefficients(gram: Tensor, orders: Sequence[Sequence[int]]) -> Tensor:
        """The PCGrad projections as coefficients: row i of the result C gives g_i' = sum_k C[i, k] g_k.

        Working on the Gram matrix G = J J^T (g_i' . g_j = C[i] @ G[:, j]) gives the same vectors as projecting
        the P-dimensional rows, at O(T^2) cost per task instead of O(T P). ``orders[i]`` lists the other tasks
        in the order task i meets them.
        """
        t = gram.shape[0]
        coef = torch.eye(t, dtype=gram.dtype)
        for i in range(t):
            for j in orders[i]:
                dot = coef[i] @ gram[:, j]
                # A zero g_j has no normal plane to project onto (and conflicts with nothing).
                if dot < 0 and gram[j, j] > 0:
                    coef[i, j] -= dot / gram[j, j]
        return coef

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        # The projections only need inner products; a float64 Gram on the CPU keeps the T x T bookkeeping
        # exact enough and costs one small transfer.
        j64 = jacobian.detach().double()
        gram = (j64 @ j64.T).cpu()
        coef = self.coefficients(gram, self.random_orders())
        weights = coef.sum(0)  # sum_i g_i' = sum_k (sum_i C[i, k]) g_k
        self.last_weights = weights.to(self.last_weights)
        # The official code projects the gradients of all variables: task t's head gets coefficient weights[t].
        self._set_task_specific_weights(weights, losses)
        return weights.to(jacobian) @ jacobian
