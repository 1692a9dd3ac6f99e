"""Preemption: SIGTERM, SIGINT and SIGUSR1 ask a training loop to save ``last.pt`` at the next step boundary
and stop, so a relaunch in the same run directory (what a SLURM requeue does) continues from that step.

The handler only sets a flag: a checkpoint written from inside a signal handler could catch the model half
way through an optimizer step. A second SIGINT (Ctrl-C twice) stops at once, without saving.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import Tensor

from mtlssl.errors import UserError

log = logging.getLogger(__name__)

# SIGUSR2 is what submitit (launcher=slurm) sends before a time limit: saved here, then handed on to it to requeue.
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, try again; the relaunch resumes


class Preempted(Exception):
    """The run stopped on a signal after saving ``last.pt``; its message says how to continue."""

    def __init__(self, signum: int, checkpoint: Path, where: str) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name} at {where}, after saving {checkpoint}")


class PreemptionGuard:
    """``with PreemptionGuard() as preemption:`` ... ``if preemption.requested: save; preemption.stop(...)``.
    Outside the main thread (where Python cannot install handlers) it never triggers."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: the user does not want to wait for the step
        self.signum = signum
        log.warning("%s received: saving last.pt at the end of this step, then stopping",
                    signal.Signals(signum).name)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def stop(self, checkpoint: Path, where: str) -> None:
        """After saving: hand the signal to the handler it displaced, if that was a Python one (submitit's
        requeues the job and exits), then stop."""
        assert self.signum is not None
        previous = self._previous.get(self.signum)
        self.__exit__()
        if callable(previous) and previous is not signal.default_int_handler:
            log.info("%s: handing over to %s after saving", signal.Signals(self.signum).name, previous)
            previous(self.signum, None)
        raise Preempted(self.signum, checkpoint, where)


def periodic_save(every: int, stepped: bool, step: int) -> bool:
    """Whether this optimizer step is one of the ``trainer.checkpoint_every_steps`` (0: never between epochs)."""
    return bool(every) and stepped and step % every == 0


def epoch_position(batch: int, layout: dict[str, int], loss_sum: Tensor, counted: int,
                   generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """What a checkpoint between epoch ends needs to continue the epoch exactly: the batches done, the running
    loss sums, and the epoch's random generators by name (the batch order is re-derived from the seed).
    ``layout`` (seed, batch sizes, batches per epoch) must be the same when it continues."""
    return {"batch": batch, "layout": layout, "loss_sum": loss_sum.detach().cpu(), "counted": counted,
            "generators": {name: g.get_state() for name, g in generators.items()}}


def check_layout(position: dict[str, Any] | None, layout: dict[str, int]) -> None:
    """Refuse to continue an epoch under another batch layout: the batches left would not be the ones left."""
    if position is None or position.get("layout", layout) == layout:
        return
    then = ", ".join(f"{k}={v}" for k, v in position["layout"].items())
    raise UserError(f"the run stopped mid-epoch with {then}, but this launch has "
                    f"{', '.join(f'{k}={v}' for k, v in layout.items())}; relaunch with the former to finish the "
                    "epoch, or use a new hydra.run.dir")


def resume_epoch(position: dict[str, Any] | None, loss_sum: Tensor,
                 generators: dict[str, torch.Generator]) -> tuple[int, int, Tensor]:
    """(batches done, losses counted, loss sums) to start an epoch from: nothing yet, or where ``position`` (a
    run resumed mid-epoch) left it, with the epoch's ``generators`` set back to the draws they had made."""
    if position is None:
        return 0, 0, loss_sum
    for name, g in generators.items():
        state = position["generators"].get(name)
        if state is not None:
            g.set_state(state)
    return position["batch"], position["counted"], position["loss_sum"].to(loss_sum.device)
