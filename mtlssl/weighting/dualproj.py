"""DualProj (torchjd's ``DualProj``; Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
2024; the projection is Equation 11 of Lopez-Paz & Ranzato's GEM, NeurIPS 2017).

The mean gradient (the combination with preference vector p, uniform 1/T by default) is projected onto the
dual cone of the task gradients, {x : g_j . x >= 0 for all j}:
    d = J^T v,   v = argmin_{v >= p} v^T G v,
so d has a non-negative inner product with every task gradient, and equals the mean when that already
holds (non-conflicting gradients). As in torchjd, the QP uses G / tr(G) (zero if tr(G) < ``norm_eps``) plus
``reg_eps`` * I, which weakens the guarantee to g_j . d >= -reg_eps * tr(G) * v_j. ``last_weights`` holds v.
One task: d = g. Unlike UPGrad, which projects each g_i separately, one projection of the average is made.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from mtlssl.weighting import solvers
from mtlssl.weighting.base import GradientWeighting
from mtlssl.weighting.upgrad import check_dual_cone_args, regularized_gramian


class DualProj(GradientWeighting):
    def __init__(
        self, num_tasks: int, pref_vector: Sequence[float] | None = None, norm_eps: float = 1e-4, reg_eps: float = 1e-4
    ) -> None:
        super().__init__(num_tasks)
        self.pref = check_dual_cone_args(num_tasks, pref_vector, norm_eps, reg_eps)
        self.norm_eps = float(norm_eps)
        self.reg_eps = float(reg_eps)

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        weights = solvers.project_onto_dual_cone(regularized_gramian(jacobian, self.norm_eps, self.reg_eps), self.pref)
        direction, self.last_weights = solvers.combine(weights, jacobian)
        return direction
