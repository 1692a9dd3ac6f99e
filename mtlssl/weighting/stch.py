"""Smooth Tchebycheff scalarisation (STCH; Lin, Zhang, Yang, Liu, Wang & Zhang, ICML 2024, "Smooth Tchebycheff
Scalarization for Multi-Objective Optimization").

    loss = mu log sum_k exp(lambda_k (L_k - z*) / mu)

with preference lambda, ideal point z* and smoothing mu > 0. It is a smooth upper bound of the Tchebycheff
scalarisation max_k lambda_k (L_k - z*) (the two differ by at most mu log K), so it mostly optimises the worst
task; its gradient weights dloss/dL_k = lambda_k softmax_k(lambda (L - z*) / mu) move from that one task
(mu -> 0) to lambda_k / K each (mu -> infinity). ``last_weights`` holds them.

``preference=None`` means lambda_k = 1 for every task: the official multi-task code (Xi-L/STCH, STCH_MTL) uses no
preference vector at all (which also makes one task reduce to L - z*). That code further applies the formula to
log(L_k / nadir_k) after a warm-up of log-loss training and multiplies by K; this class is the paper's formula on
the raw losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import LossWeighting


class STCH(LossWeighting):
    def __init__(self, num_tasks: int, mu: float = 1.0, preference: Sequence[float] | None = None,
                 ideal: float = 0.0) -> None:
        super().__init__(num_tasks)
        if not mu > 0 or not math.isfinite(mu):
            raise UserError(f"weighting.mu (the smoothing) must be a finite number > 0 (got {mu})")
        prefs = [1.0] * num_tasks if preference is None else [float(p) for p in preference]
        if len(prefs) != num_tasks:
            raise UserError(f"weighting.preference has {len(prefs)} values for {num_tasks} tasks; "
                            "give one per task, in the order of `tasks` (or null for all 1)")
        if not all(p >= 0 and math.isfinite(p) for p in prefs) or not any(p > 0 for p in prefs):
            raise UserError(f"weighting.preference must be finite, >= 0 and not all 0 (got {prefs})")
        if not math.isfinite(ideal):
            raise UserError(f"weighting.ideal (the ideal point z*) must be a finite number (got {ideal})")
        self.mu, self.ideal = float(mu), float(ideal)
        self.register_buffer("preference", torch.tensor(prefs, dtype=torch.float32))

    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        pref = self.preference.to(losses.dtype)
        scaled = pref * (losses - self.ideal) / self.mu
        # logsumexp subtracts the max before exponentiating: stable for small mu and large losses.
        total = self.mu * torch.logsumexp(scaled, dim=0)
        self.last_weights = (pref * torch.softmax(scaled, dim=0)).detach()
        return total
