"""Optimizers over parameter groups (learning-rate multipliers, no decay on norms and biases) and
per-step learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from mtlssl.config import instantiate
from mtlssl.errors import UserError

OptimizerFactory = Callable[[list[dict]], Optimizer]


def param_groups(parts: Sequence[tuple[Iterable[Tensor] | nn.Module, float]], lr: float,
                 weight_decay: float) -> list[dict]:
    """One decayed and one undecayed group per (parameters or module, lr multiplier); frozen parameters are left
    out.

    Biases and normalisation parameters (1-d tensors) get no weight decay, as in SimCLR/LARS and timm.
    """
    if not lr > 0:  # written so that NaN fails too
        raise UserError(f"optim.lr must be > 0 (got {lr}); set a positive rate, e.g. optim.lr=1e-3")
    if not weight_decay >= 0:
        raise UserError(f"optim.weight_decay must be >= 0 (got {weight_decay}); use 0 for no decay")
    groups = []
    for part, lr_mult in parts:
        if not lr_mult >= 0:  # the only multiplier a user sets is the encoder's
            raise UserError(f"encoder.lr_mult must be >= 0 (got {lr_mult}); to keep the encoder fixed use "
                            "encoder.mode=frozen")
        params = [p for p in (part.parameters() if isinstance(part, nn.Module) else part) if p.requires_grad]
        for decay, members in ((weight_decay, [p for p in params if p.dim() > 1]),
                               (0.0, [p for p in params if p.dim() <= 1])):
            if members:
                groups.append({"params": members, "lr": lr * lr_mult, "weight_decay": decay})
    if not groups:
        raise UserError("nothing to train: every parameter is frozen; unfreeze the encoder or add a task")
    return groups


def check_optimizer(node: DictConfig) -> None:
    """The optimizer settings torch would refuse with a bare ValueError, named by their config key."""
    momentum, betas, eps = node.get("momentum"), node.get("betas"), node.get("eps")
    if momentum is not None and not 0 <= momentum < 1:
        raise UserError(f"optim.momentum must be in [0, 1) (got {momentum}); set e.g. optim.momentum=0.9")
    if betas is not None and (len(betas) != 2 or not all(0 <= b < 1 for b in betas)):
        raise UserError(f"optim.betas must be two values in [0, 1) (got {list(betas)}); set e.g. "
                        "optim.betas=[0.9,0.999]")
    if eps is not None and not eps >= 0:
        raise UserError(f"optim.eps must be >= 0 (got {eps}); set e.g. optim.eps=1e-8")
    if node.get("nesterov") and not (momentum or 0) > 0:
        raise UserError("optim.nesterov=true needs optim.momentum > 0; set optim.momentum=0.9 or optim.nesterov=false")


def build_optimizer(node: DictConfig, groups: list[dict]) -> Optimizer:
    """The optimizer of config ``optim`` over ``groups`` (from ``param_groups``); a setting torch refuses is a
    UserError naming it, not a traceback."""
    check_optimizer(node)
    factory = instantiate(node, "optim")
    try:
        return factory(groups)
    except (ValueError, TypeError) as err:  # torch's remaining checks, or a key the optimizer does not take
        raise UserError(f"optim ({node.get('_target_')}): {err}; fix that optim.* setting") from err


def _check_warmup(warmup_epochs: float) -> None:
    if not warmup_epochs >= 0:
        raise UserError(f"sched.warmup_epochs must be >= 0 (got {warmup_epochs}); use 0 for no warm-up")


def cosine(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0,
    final_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up from ~0, then cosine decay to ``final_lr_ratio`` times the base rate, stepped per batch."""
    _check_warmup(warmup_epochs)
    if not 0.0 <= final_lr_ratio <= 1.0:
        raise UserError(f"sched.final_lr_ratio must be in [0, 1] (got {final_lr_ratio}); it is the final rate as a "
                        "fraction of optim.lr, e.g. sched.final_lr_ratio=0")
    warmup = round(warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return final_lr_ratio + (1.0 - final_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0.0) -> LambdaLR:
    """The base rate throughout, after an optional linear warm-up."""
    _check_warmup(warmup_epochs)
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
