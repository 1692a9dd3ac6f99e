"""MGDA (Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

The update direction is the min-norm point of the convex hull of the task gradients,
    w = argmin_{w in simplex} ||sum_t w_t g_t / n_t||^2,   d = sum_t w_t g_t,
which is a common descent direction (g_t . d >= 0 for every t) whenever one exists, and 0 at a
Pareto-stationary point. The normalisers n_t are those of the official code (``gradient_normalizers``):
"none" (1), "l2" (||g_t||), "loss" (L_t) and "loss+" (L_t ||g_t||). As in the official training loop, the
weights found on the normalised gradients scale the *raw* task losses, so d uses the raw g_t; with a
normalisation other than "none", d is therefore not guaranteed to be a common descent direction.

MGDA-UB (the paper's efficient upper bound) is this same rule applied to the gradients with respect to the
shared representation instead of the shared parameters: the engine chooses which Jacobian it passes.
``last_weights`` holds w (it sums to 1; the official code does not rescale it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting import solvers
from mtlssl.weighting.base import GradientWeighting

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


class MGDA(GradientWeighting):
    def __init__(self, num_tasks: int, normalization: str = "none") -> None:
        super().__init__(num_tasks)
        if normalization not in NORMALIZATIONS:
            raise UserError(
                f"weighting.normalization must be one of {', '.join(NORMALIZATIONS)} (got '{normalization}')"
            )
        self.normalization = normalization

    def _normalizers(self, gram: torch.Tensor, losses: Tensor) -> torch.Tensor:
        norms = gram.diagonal().clamp_min(0).sqrt()
        if self.normalization == "none":
            return torch.ones_like(norms)
        if self.normalization == "l2":
            return norms
        loss = losses.detach().to(device="cpu", dtype=torch.float64)
        if bool((loss <= 0).any()):  # dividing by a non-positive loss would flip or blow up a gradient
            raise ValueError(f"MGDA normalization '{self.normalization}' needs positive losses, got {loss.tolist()}")
        return loss if self.normalization == "loss" else loss * norms

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        gram = torch.from_numpy(solvers.gramian(jacobian))
        # A zero normaliser (a zero gradient under "l2") leaves that gradient zero instead of making NaNs.
        scale = 1.0 / self._normalizers(gram, losses).clamp_min(torch.finfo(torch.float64).tiny)
        weights = solvers.min_norm_weights((scale[:, None] * gram * scale[None, :]).numpy())
        direction, self.last_weights = solvers.combine(weights, jacobian)
        # The official loop back-propagates sum_t w_t L_t through the whole model, heads included.
        self._set_task_specific_weights(self.last_weights, losses)
        return direction
