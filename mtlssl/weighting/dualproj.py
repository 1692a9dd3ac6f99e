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

from torch import Tensor

from mtlssl.weighting import solvers
from mtlssl.weighting.upgrad import DualConeWeighting


class DualProj(DualConeWeighting):
    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        weights = solvers.project_onto_dual_cone(self.gramian(jacobian), self.pref)
        direction, self.last_weights = solvers.combine(weights, jacobian)
        return direction
