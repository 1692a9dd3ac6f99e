"""DB-MTL, Dual-Balancing Multi-Task Learning (Lin et al., 2023, "Dual-Balancing for Multi-Task Learning",
arXiv:2308.12029).

Two balancing steps, as in the authors' implementation in LibMTL:

- Loss-scale balancing: each task is trained on log L_t, whose gradient is g_t / L_t (computed here from the
  engine's g_t and L_t, with LibMTL's 1e-8 guard: g_t / (L_t + 1e-8)). Multiplying L_t by c > 0 leaves it
  unchanged.
- Gradient-magnitude balancing: an EMA of those gradients, with a rate that decays with the step k = 1, 2, ...

      beta_k = beta / k^beta_sigma,     ghat_t <- beta_k ghat_t + (1 - beta_k) g_t / (L_t + 1e-8),

  (ghat starts at 0 and is not bias-corrected, as in the reference code) is rescaled to the largest norm,
  alpha_t = max_s ||ghat_s|| / ||ghat_t||, and the direction is d = sum_t alpha_t ghat_t.

The EMA is a [T, P] buffer: P is unknown when the method is built, so it starts as [T, 0], is allocated on the
first call, and ``_load_from_state_dict`` resizes it to a checkpoint's shape so a resumed run continues.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import GradientWeighting

EPS = 1e-8  # the reference code's guard in log(L + eps) and in the norm ratio


class DBMTL(GradientWeighting):
    """Balance log-loss gradients (scale-free) and then their EMA magnitudes (all to the largest norm).

    Defaults are the paper's and LibMTL's: ``beta`` = 0.9, ``beta_sigma`` = 0.5. ``last_weights`` holds the
    magnitude-balancing factors alpha_t (the direction is built from the EMA, not from this step's g_t alone).
    With one task the direction is the EMA of g / (L + 1e-8) (alpha = 1), which is (1 - beta) g / L on the
    first step.
    """

    def __init__(self, num_tasks: int, beta: float = 0.9, beta_sigma: float = 0.5) -> None:
        super().__init__(num_tasks)
        if not (math.isfinite(beta) and 0.0 <= beta < 1.0):
            raise UserError(f"weighting.beta (DB-MTL's EMA rate) must be in [0, 1) (got {beta}); set e.g. "
                            "weighting.beta=0.9 (the paper's)")
        if not (math.isfinite(beta_sigma) and beta_sigma >= 0):
            raise UserError(f"weighting.beta_sigma (decay exponent of the EMA rate) must be >= 0 (got {beta_sigma})")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self.register_buffer("grad_ema", torch.zeros(num_tasks, 0))
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        # The buffer's size is only known once gradients were seen: take the checkpoint's before loading.
        saved = state_dict.get(prefix + "grad_ema")
        if saved is not None and saved.shape != self.grad_ema.shape:
            self.grad_ema = torch.zeros(saved.shape, dtype=saved.dtype, device=self.grad_ema.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._check_tasks(jacobian.shape[0])
        grads, given, losses = jacobian.detach(), losses, losses.detach().to(jacobian)
        if (losses < 0).any():
            raise UserError("DB-MTL balances log-losses, so every task loss must be >= 0 "
                            f"(got {losses.tolist()}); use another weighting method for signed losses")
        if self.grad_ema.shape[1] == 0:
            self.grad_ema = torch.zeros_like(grads)
        elif self.grad_ema.shape[1] != grads.shape[1]:
            raise ValueError(f"DBMTL holds an EMA for {self.grad_ema.shape[1]} shared parameters, "
                             f"got gradients of {grads.shape[1]}")
        self.step += 1
        rate = self.beta / self.step.item() ** self.beta_sigma
        log_grads = grads / (losses[:, None] + EPS)  # d log L_t = g_t / L_t
        ema = self.grad_ema.to(grads)
        ema = log_grads + rate * (ema - log_grads)
        self.grad_ema.copy_(ema)
        norms = ema.norm(dim=1)
        alpha = norms.max() / (norms + EPS)
        self.last_weights = alpha.to(self.last_weights)
        # The reference code back-propagates log(L_t + 1e-8) through every parameter: each head gets g / (L_t + 1e-8).
        self._set_task_specific_weights(1.0 / (losses + EPS), given)
        return alpha @ ema
