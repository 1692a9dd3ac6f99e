"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017), the optimizer of the SimCLR recipe.

Each weight tensor's step is scaled by its trust ratio
    eta * ||w|| / (||g|| + weight_decay * ||w||),
then applied with heavy-ball momentum, as solo-learn does for SimCLR. Biases and normalisation
parameters (1-d tensors) are excluded from the adaptation and the decay, as in the paper's
large-batch practice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer

from mtlssl.errors import UserError


class LARS(Optimizer):
    def __init__(
        self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02,
        eps: float = 1e-8,
    ) -> None:
        rules = {"lr": (lr, lr > 0, "> 0"), "momentum": (momentum, 0 <= momentum < 1, "in [0, 1)"),
                 "weight_decay": (weight_decay, weight_decay >= 0, ">= 0"), "eta": (eta, eta > 0, "> 0")}
        bad = [f"optim.{k}={v} must be {rule}" for k, (v, ok, rule) in rules.items() if not ok]  # NaN fails too
        if bad:
            raise UserError(f"lars needs lr > 0, 0 <= momentum < 1, weight_decay >= 0 and eta > 0: {'; '.join(bad)}. "
                            "Set e.g. optim.lr=0.3 optim.momentum=0.9 optim.eta=0.02")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta,
                                  "eps": eps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if p.dim() > 1:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d_p)
                    trust = group["eta"] * w_norm / (g_norm + group["weight_decay"] * w_norm + group["eps"])
                    # A zero weight or gradient (fresh layer, dead unit) keeps the plain step.
                    trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    d_p = d_p.add(p, alpha=group["weight_decay"]).mul_(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = d_p.clone()
                else:
                    state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
                p.add_(state["momentum_buffer"], alpha=-group["lr"])
        return loss
