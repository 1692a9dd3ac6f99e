"""Fast Adaptive Multitask Optimization (FAMO; Liu, Feng, Stone & Liu, NeurIPS 2023), as in the official code
(github.com/Cranial-XIX/FAMO, ``famo.py``).

Task logits xi (start 0) give weights z = softmax(xi). With D_k = L_k - L*_k + eps (L* = ``min_losses``) and
c = 1 / sum_k (z_k / D_k), held constant, the loss is

    sum_k z_k log(D_k) / c,       whose gradient weights are  dL/dL_k = z_k / (c D_k)   (they sum to 1),

i.e. a step that decreases the weighted log-losses. After the model's update the engine passes the same batch's
new losses to ``step_end``; with delta_k = log D_k(before) - log D_k(after), the logits take one Adam step
(lr ``w_lr``, L2 weight decay ``gamma``, torch.optim.Adam's formula) on the gradient J_softmax(xi)^T delta. A task
whose loss fell less than the z-weighted average has a negative gradient, so its logit, and weight, grows.

The paper's Algorithm 1 writes a plain gradient step xi <- xi - beta (J^T delta + gamma xi); the official code
uses Adam, which is what is implemented. The Adam moments live in buffers, so checkpoints resume exactly.
With one task softmax is constant: the weight stays 1 and the loss is D log D, whose gradient is that of L.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import LossWeighting

EPS = 1e-8  # the official code's offset that keeps log(L - L*) finite
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as the official code uses them


class FAMO(LossWeighting):
    needs_post_step_losses = True

    def __init__(self, num_tasks: int, w_lr: float = 0.025, gamma: float = 0.001,
                 min_losses: float | Sequence[float] = 0.0) -> None:
        super().__init__(num_tasks)
        if not w_lr > 0:
            raise UserError(f"weighting.w_lr must be > 0 (got {w_lr}); FAMO uses 0.025")
        if not gamma >= 0:
            raise UserError(f"weighting.gamma (the logits' weight decay) must be >= 0 (got {gamma})")
        mins = [float(min_losses)] * num_tasks if isinstance(min_losses, (int, float)) else list(min_losses)
        if len(mins) != num_tasks or not all(math.isfinite(m) for m in mins):
            raise UserError(f"weighting.min_losses must be one finite number or one per task ({num_tasks}); "
                            f"got {min_losses}")
        self.w_lr, self.gamma = float(w_lr), float(gamma)
        self.register_buffer("min_losses", torch.tensor(mins, dtype=torch.float32))
        # Buffers, not parameters: the logits are trained by FAMO's own rule in step_end, never by the model's
        # optimizer from the loss's gradient.
        self.register_buffer("logits", torch.zeros(num_tasks))
        self.register_buffer("exp_avg", torch.zeros(num_tasks))
        self.register_buffer("exp_avg_sq", torch.zeros(num_tasks))
        self.register_buffer("adam_step", torch.zeros((), dtype=torch.long))
        # The losses combine saw, for the step_end that follows; never checkpointed (a step is atomic).
        self.register_buffer("prev_losses", None, persistent=False)

    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        z = torch.softmax(self.logits, dim=0).to(losses.dtype)
        d = losses - self.min_losses.to(losses.dtype) + EPS
        c = (z / d).sum().detach()
        self.prev_losses = losses.detach().to(self.logits.dtype).clone()
        self.last_weights = (z / (c * d)).detach().to(self.logits.dtype)
        return (d.log() * z / c).sum()

    def step_end(self, new_losses: Tensor) -> None:
        if self.prev_losses is None:
            raise RuntimeError("FAMO.step_end needs the losses of a preceding combine call")
        self._check_tasks(new_losses.shape[0])
        new = new_losses.detach().to(self.logits.dtype)
        delta = (self.prev_losses - self.min_losses + EPS).log() - (new - self.min_losses + EPS).log()
        with torch.enable_grad():  # the engine calls this under no_grad
            xi = self.logits.detach().requires_grad_(True)
            grad = torch.autograd.grad(torch.softmax(xi, dim=0), xi, grad_outputs=delta)[0]
        self._adam_step(grad)
        self.prev_losses = None  # each combine feeds exactly one update

    @torch.no_grad()
    def _adam_step(self, grad: Tensor) -> None:
        """torch.optim.Adam's single-tensor update (weight decay added to the gradient), op for op."""
        beta1, beta2 = BETAS
        self.adam_step += 1
        grad = grad.add(self.logits, alpha=self.gamma)
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = int(self.adam_step)  # the bias corrections in Python floats, as torch computes them
        denom = (self.exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(ADAM_EPS)
        self.logits.addcdiv_(self.exp_avg, denom, value=-self.w_lr / (1 - beta1**step))
