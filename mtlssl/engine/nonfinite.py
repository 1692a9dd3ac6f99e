"""Non-finite losses and gradients, found per task before they reach the weights.

Policy ``raise`` (the default) stops the run with the step, the task and the last good checkpoint.
Policy ``skip`` drops the step (no optimizer, scheduler or weighting update), counts it, and stops after
more than ``max_skips`` of them. Under fp16 the grad scaler owns gradient overflow: it skips those steps and lowers its
scale, which is how mixed precision works, so they are not faults; non-finite losses still are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from mtlssl.errors import UserError

log = logging.getLogger(__name__)
POLICIES = ("raise", "skip")


class NonFiniteError(UserError):
    """A non-finite loss or gradient under policy ``raise``, or too many under ``skip``."""


def nonfinite_names(values: Tensor, names: Sequence[str]) -> list[str]:
    """The names of the non-finite entries of ``values`` (one device sync)."""
    bad = (~torch.isfinite(values.detach())).tolist()
    return [n for n, b in zip(names, bad, strict=True) if b]


def nonfinite_grads(groups: Mapping[str, Sequence[Tensor]]) -> list[str]:
    """The named parameter groups (e.g. a task's head, the shared encoder) with a non-finite gradient (one device
    sync)."""
    names, flags = [], []
    for name, params in groups.items():
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            names.append(name)
            flags.append(torch.stack([torch.isfinite(g).all() for g in grads]).all())
    if not flags:
        return []
    return [n for n, ok in zip(names, torch.stack(flags).tolist(), strict=True) if not ok]


class NonFiniteGuard:
    """The policy for non-finite losses (checked before the backward pass) and gradients (before the step):
    ``losses_ok`` and ``grads_ok`` return False for a step to skip, or raise. ``skipped`` is saved in last.pt."""

    def __init__(self, policy: str, max_skips: int, last_good: Path) -> None:
        if policy not in POLICIES:
            raise UserError(f"trainer.nonfinite={policy} is not one of {', '.join(POLICIES)}")
        if max_skips < 0:
            raise UserError(f"trainer.max_nonfinite_skips must be >= 0 (got {max_skips})")
        self.policy, self.max_skips, self.last_good = policy, max_skips, last_good
        self.skipped = 0

    def losses_ok(self, losses: Tensor, tasks: Sequence[str], epoch: int, step: int) -> bool:
        bad = nonfinite_names(losses, tasks)
        values = dict(zip(tasks, losses.detach().tolist(), strict=True)) if bad else {}
        return not bad or self._fault(f"non-finite loss of task {', '.join(f'{t} ({values[t]})' for t in bad)}",
                                      epoch, step)

    def grads_ok(self, groups: Mapping[str, Sequence[Tensor]], epoch: int, step: int) -> bool:
        bad = nonfinite_grads(groups)
        return not bad or self._fault(f"non-finite gradient in {', '.join(bad)}", epoch, step)

    def _fault(self, what: str, epoch: int, step: int) -> bool:
        """Raise, or count a skipped step (False); raise when it would be the (max_skips + 1)-th."""
        where = f"at epoch {epoch + 1}, step {step + 1}"
        good = f"the last good checkpoint is {self.last_good}" if self.last_good.exists() else \
            "no checkpoint was saved yet"
        if self.policy == "raise":
            raise NonFiniteError(f"{what} {where}; {good}. Lower optim.lr, set trainer.grad_clip, or use "
                                 "trainer.nonfinite=skip to skip such steps")
        if self.skipped >= self.max_skips:
            raise NonFiniteError(f"{what} {where}, after {self.skipped} skipped steps (trainer.max_nonfinite_skips="
                                 f"{self.max_skips}); {good}. Lower optim.lr or set trainer.grad_clip")
        self.skipped += 1
        log.warning("%s %s: step skipped (%d of at most %d)", what, where, self.skipped, self.max_skips)
        return False
