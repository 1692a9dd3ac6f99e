"""GradVac, Gradient Vaccine (Wang et al., ICLR 2021, "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models").

An adaptive generalisation of PCGrad: instead of only removing negative similarity, each pair (i, j) has a
target cosine similarity phi_hat_ij, an EMA of the observed ones. For each task i, starting from g_i' = g_i
and visiting the other tasks j in a random order, with phi_ij = cos(g_i', g_j):

    if phi_ij < phi_hat_ij:
        g_i' <- g_i' + ||g_i'|| (phi_hat_ij sqrt(1 - phi_ij^2) - phi_ij sqrt(1 - phi_hat_ij^2))
                       / (||g_j|| sqrt(1 - phi_hat_ij^2)) * g_j          (afterwards cos(g_i', g_j) = phi_hat_ij)
    phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi_ij                   (phi_ij from before the adjustment)

The direction is sum_i g_i'. The targets start at 0 (so the first step is PCGrad) and are a [T, T] buffer.
We use the paper's "whole model" granularity (one vector for all shared parameters); the paper's per-layer
variants need the parameter layout, which this interface does not pass.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import GradientWeighting


class GradVac(GradientWeighting):
    """Raise each pairwise gradient similarity to an EMA target by adding a multiple of the other gradient.

    ``beta`` is the EMA rate of the targets: the paper's 1e-2 (chosen for long NMT runs; LibMTL defaults to
    0.5, which tracks the recent similarity much faster). ``last_weights`` holds w with direction =
    sum_t w_t g_t. With one task there are no pairs and the direction is the gradient.
    """

    def __init__(self, num_tasks: int, beta: float = 1e-2) -> None:
        super().__init__(num_tasks)
        if not (math.isfinite(beta) and 0.0 < beta <= 1.0):
            raise UserError(f"weighting.beta (the EMA rate of the similarity targets) must be in (0, 1] (got {beta}); "
                            "set e.g. weighting.beta=0.01 (the paper's)")
        self.beta = float(beta)
        self.register_buffer("targets", torch.zeros(num_tasks, num_tasks))

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        # g_i' = sum_k C[i, k] g_k, so every norm and inner product comes from the Gram matrix G = J J^T:
        # ||g_i'||^2 = C[i] G C[i]^T and g_i' . g_j = C[i] G[:, j]. Float64 on the CPU: T x T is tiny.
        j64 = jacobian.detach().double()
        gram = (j64 @ j64.T).cpu()
        targets = self.targets.detach().double().cpu()
        coef = torch.eye(self.num_tasks, dtype=torch.float64)
        for i, order in enumerate(self.random_orders()):
            for j in order:
                norm_i = (coef[i] @ gram @ coef[i]).clamp_min(0).sqrt()
                norm_j = gram[j, j].clamp_min(0).sqrt()
                # A zero gradient has no direction: its cosine counts as 0 and nothing is added.
                degenerate = norm_i == 0 or norm_j == 0
                phi = 0.0 if degenerate else ((coef[i] @ gram[:, j]) / (norm_i * norm_j)).clamp(-1, 1).item()
                target = targets[i, j].item()
                if phi < target and not degenerate:
                    # sqrt(1 - target^2) is 0 only for a target of exactly +-1, unreachable by a finite step.
                    rest = max(math.sqrt(1 - target**2), 1e-12)
                    coef[i, j] += norm_i * (target * math.sqrt(1 - phi**2) - phi * rest) / (norm_j * rest)
                targets[i, j] = (1 - self.beta) * target + self.beta * phi
        self.targets.copy_(targets)
        weights = coef.sum(0)
        self.last_weights = weights.to(self.last_weights)
        return weights.to(jacobian) @ jacobian
