"""UPGrad, unconflicting projection of gradients (Quinton & Rey, "Jacobian Descent for Multi-Objective
Optimization", 2024; torchjd's ``UPGrad``).

Each task gradient g_i is projected onto the dual cone of the gradients, {x : g_j . x >= 0 for all j}, and
the projections are combined with the preference vector p (uniform 1/T by default):
    d = sum_i p_i * proj(g_i),   proj(J^T u) = J^T v(u),   v(u) = argmin_{v >= u} v^T G v,
so d has a non-negative inner product with every task gradient; non-conflicting gradients (all g_i . g_j
>= 0) are left unchanged, giving the plain mean. In weights: w = sum_i v(p_i e_i), solved on the Gramian
(``solvers.project_onto_dual_cone``). As in torchjd, the QP uses G / tr(G) (zero if tr(G) < ``norm_eps``)
plus ``reg_eps`` * I, which keeps it strictly convex; that ridge weakens the guarantee to
g_j . d >= -reg_eps * tr(G) * w_j. ``last_weights`` holds w. One task: d = g (p = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting import solvers
from mtlssl.weighting.base import GradientWeighting


def check_dual_cone_args(
    num_tasks: int, pref_vector: Sequence[float] | None, norm_eps: float, reg_eps: float
) -> np.ndarray:
    """Validate the torchjd-style hyper-parameters shared with DualProj; the preference vector as an array."""
    if not norm_eps >= 0:
        raise UserError(f"weighting.norm_eps must be >= 0 (got {norm_eps})")
    if not reg_eps >= 0:
        raise UserError(f"weighting.reg_eps must be >= 0 (got {reg_eps})")
    if pref_vector is None:
        return np.full(num_tasks, 1.0 / num_tasks)
    pref = np.asarray(list(pref_vector), dtype=np.float64)
    if pref.shape != (num_tasks,) or not np.all(pref >= 0):
        raise UserError(
            f"weighting.pref_vector must have one value >= 0 per task ({num_tasks} tasks; got {list(pref_vector)})"
        )
    return pref


def regularized_gramian(jacobian: Tensor, norm_eps: float, reg_eps: float) -> np.ndarray:
    """torchjd's ``regularize(normalize(G, norm_eps), reg_eps)``."""
    gram = solvers.gramian(jacobian)
    trace = float(np.trace(gram))
    if not np.isfinite(trace):  # inf/NaN gradients: keep them, the solver then returns NaN weights
        return gram
    gram = gram / trace if trace >= norm_eps and trace > 0 else np.zeros_like(gram)
    return gram + reg_eps * np.eye(len(gram))


class DualConeWeighting(GradientWeighting):
    """What UPGrad and DualProj share: torchjd's preference vector, normalisation and regularisation."""

    def __init__(
        self, num_tasks: int, pref_vector: Sequence[float] | None = None, norm_eps: float = 1e-4, reg_eps: float = 1e-4
    ) -> None:
        super().__init__(num_tasks)
        self.pref = check_dual_cone_args(num_tasks, pref_vector, norm_eps, reg_eps)
        self.norm_eps = float(norm_eps)
        self.reg_eps = float(reg_eps)

    def gramian(self, jacobian: Tensor) -> np.ndarray:
        self._check_tasks(jacobian.shape[0])
        return regularized_gramian(jacobian, self.norm_eps, self.reg_eps)


class UPGrad(DualConeWeighting):
    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        gram = self.gramian(jacobian)
        # One projection per task, of p_i g_i (rows of diag(p)), sharing one factorisation of G.
        weights = solvers.project_onto_dual_cone(gram, np.diag(self.pref)).sum(axis=0)
        direction, self.last_weights = solvers.combine(weights, jacobian)
        return direction
