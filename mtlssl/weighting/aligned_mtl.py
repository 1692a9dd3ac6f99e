"""Aligned-MTL (Senushkin et al., CVPR 2023, "Independent Component Alignment for Multi-Task Learning").

Aligned-MTL replaces the task gradients by the closest (Procrustes) system of orthogonal gradients of equal
norm, which has condition number 1. With the Gram matrix G = J J^T = V diag(lambda) V^T (T x T), keeping the
eigenpairs with lambda > tol = max(lambda) * T * eps (the official code's rank cut),

    B = sigma_scale * V diag(1 / sqrt(lambda)) V^T,

the aligned gradients are the rows of B J: (B J)(B J)^T = B G B^T = sigma_scale^2 * V V^T, i.e. orthogonal with
equal norms sigma_scale on the non-degenerate subspace. The paper scales by the smallest singular value of J,
sigma_scale = sqrt(lambda_min) ("min"); the official code (SamsungLabs/MTL) also offers "median" (sqrt of the
median eigenvalue) and "rmse" (sqrt of the mean). The direction sums the aligned gradients, as the official
balancer does (uniform task preferences of 1): d = 1^T B J, i.e. task weights w = B 1.

Computed with ``torch.linalg.eigh`` in float64 (the official and LibMTL code call ``torch.symeig``, removed in
torch 2); eps is that of the Jacobian's dtype, matching the official float32 cut for float32 gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import GradientWeighting

SCALE_MODES = ("min", "median", "rmse")


class AlignedMTL(GradientWeighting):
    """Align the task gradients to an orthogonal, equal-norm system and sum it.

    ``last_weights`` holds w = B 1, the weights of the raw task gradients in the direction. A rank-deficient
    Jacobian (e.g. identical rows) is aligned on its non-degenerate subspace; an all-zero one gives a zero
    direction. With one task B = 1 and the direction is the gradient.
    """

    def __init__(self, num_tasks: int, scale_mode: str = "min") -> None:
        super().__init__(num_tasks)
        if scale_mode not in SCALE_MODES:
            raise UserError(f"weighting.scale_mode must be one of {', '.join(SCALE_MODES)} (got '{scale_mode}')")
        self.scale_mode = scale_mode

    @staticmethod
    def alignment(gram: Tensor, eps: float, scale_mode: str = "min") -> Tensor:
        """The alignment matrix B [T, T] of a Gram matrix G [T, T] (float64), with rank cut eps."""
        lam, vec = torch.linalg.eigh(gram)
        keep = lam > lam.max() * gram.shape[0] * eps
        if not keep.any():  # an all-zero Jacobian: nothing to align
            return torch.zeros_like(gram)
        lam, vec = lam[keep], vec[:, keep]
        if scale_mode == "min":
            scale = lam.min().sqrt()
        elif scale_mode == "median":
            # torch.median returns the lower middle value for an even count, as in the official code.
            scale = lam.median().sqrt()
        else:
            scale = lam.mean().sqrt()
        return scale * (vec / lam.sqrt()) @ vec.T

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        grads = jacobian.detach()
        g64 = grads.double()
        b = self.alignment(g64 @ g64.T, torch.finfo(grads.dtype).eps, self.scale_mode)
        weights = b.sum(1)  # B 1 (B is symmetric): the aligned rows summed with unit preferences
        self.last_weights = weights.to(self.last_weights)
        return weights.to(grads) @ grads
