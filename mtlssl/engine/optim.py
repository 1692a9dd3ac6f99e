"""Optimizers over parameter groups (learning-rate multipliers, no decay on norms and biases) and
per-step learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mtlssl.errors import UserError

OptimizerFactory = Callable[[list[dict]], Optimizer]


def param_groups(modules: Sequence[tuple[nn.Module, float]], lr: float, weight_decay: float) -> list[dict]:
    """One decayed and one undecayed group per (module, lr multiplier); frozen parameters are left out.

    Biases and normalisation parameters (1-d tensors) get no weight decay, as in SimCLR/LARS and timm.
    """
    if lr <= 0:
        raise UserError(f"optim.lr must be > 0 (got {lr})")
    if weight_decay < 0:
        raise UserError(f"optim.weight_decay must be >= 0 (got {weight_decay})")
    groups = []
    for module, lr_mult in modules:
        params = [p for p in module.parameters() if p.requires_grad]
        for decay, members in ((weight_decay, [p for p in params if p.dim() > 1]),
                               (0.0, [p for p in params if p.dim() <= 1])):
            if members:
                groups.append({"params": members, "lr": lr * lr_mult, "weight_decay": decay})
    if not groups:
        raise UserError("nothing to train: every parameter is frozen; unfreeze the encoder or add a task")
    return groups


def cosine(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
    final_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up from ~0, then cosine decay to ``final_lr_ratio`` times the base rate, stepped per batch."""
    warmup = round(warmup_epochs * steps_per_epoch)
    if warmup_epochs < 0 or not 0.0 <= final_lr_ratio <= 1.0:
        raise UserError(f"sched: warmup_epochs must be >= 0 and final_lr_ratio in [0, 1] "
                        f"(got {warmup_epochs}, {final_lr_ratio})")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0) -> LambdaLR:
    """The base rate throughout, after an optional linear warm-up."""
    warmup = round(warmup_epochs * steps_per_epoch)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(trainable)


def current_lr(optimizer: Optimizer) -> float:
    return max(group["lr"] for group in optimizer.param_groups)


def apply_gradients(
    optimizer: Optimizer, scheduler: LambdaLR, scaler: torch.amp.GradScaler, grad_clip: float | None
) -> None:
    """Step on the (scaled) gradients in ``.grad``: unscale so clipping sees true norms, clip, step, schedule.
    The scaler skips the step when fp16 overflowed."""
    scaler.unscale_(optimizer)
    if grad_clip:
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
