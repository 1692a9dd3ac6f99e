"""The one training loop under every stage: ``fit(state, streams, step, evaluate, config, run)``.

It owns, once for pretrain and train-mtl alike: epochs and steps, gradient accumulation, the (seed, stream,
epoch) generators, mid-epoch resume, preemption signals, the non-finite policy, checkpoints, the progress bar,
TensorBoard and the log. A stage builds the parts (data streams, model, objectives, weighting, optimizer) and
says how to score an epoch; ``fit`` trains.

A step reads one batch from every stream: the first stream sets the epoch's length, and any other stream
cycles through its data as often as that needs (a labelled and an unlabelled batch per step, for joint
training). Each stream's batch order is drawn from ``generator(seed, stream.shuffle_id, epoch)`` and its
augmentation from ``generator(seed, stream.augment_id, epoch)``, so an epoch's draws never depend on what ran
before it, and a run resumed mid-epoch replays exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from mtlssl.data.image_set import Batch, ImageSet
from mtlssl.engine.backward import GradientOptions, backward
from mtlssl.engine.gradients import cosine_heatmap, gradient_stats
from mtlssl.engine.nonfinite import NonFiniteGuard
from mtlssl.engine.optim import apply_gradients, current_lr
from mtlssl.engine.preemption import PreemptionGuard, check_layout, epoch_position, periodic_save, resume_epoch
from mtlssl.engine.rng import AUGMENT, SHUFFLE, WEIGHTING, generator
from mtlssl.engine.run_dir import RunDir
from mtlssl.engine.runtime import Runtime, autocast
from mtlssl.engine.state import TrainState
from mtlssl.errors import UserError
from mtlssl.objectives import Objective
from mtlssl.reporting.console import progress
from mtlssl.reporting.tensorboard import TensorBoard
from mtlssl.tasks import is_better
from mtlssl.weighting.base import Weighting

log = logging.getLogger("mtlssl.engine.loop")

Evaluate = Callable[[int, dict[str, float]], dict[str, float]]


@dataclass(frozen=True)
class Stream:
    """A split read in the run's seeded order, ``batch_size`` images per step (incomplete batches dropped)."""

    name: str
    data: ImageSet
    batch_size: int
    shuffle_id: int = SHUFFLE
    augment_id: int = AUGMENT

    def batches_per_pass(self) -> int:
        return self.data.steps_per_epoch(self.batch_size, self.name)

    def batches(self, seed: int, epoch: int, skip: int, cycle: bool) -> Iterator[Batch]:
        """This epoch's batches from the ``skip``-th on: one pass, or (``cycle``) passes without end, each in a
        new order drawn from the epoch's generator."""
        shuffle = generator(seed, self.shuffle_id, epoch)
        passes, skip = divmod(skip, self.batches_per_pass()) if cycle else (0, skip)
        for _ in range(passes):  # the orders of the passes already done: ImageSet.batches draws one per pass
            torch.randperm(len(self.data), generator=shuffle)
        while True:
            yield from self.data.batches(self.batch_size, shuffle=True, generator=shuffle, drop_last=True, skip=skip)
            if not cycle:
                return
            skip = 0


def epoch_plan(stream: Stream, accumulate: int) -> tuple[int, int]:
    """(micro-batches, optimizer updates) per epoch of the first stream; a trailing incomplete accumulation
    cycle is dropped."""
    if accumulate < 1:
        raise UserError(f"trainer.accumulate_grad_batches must be >= 1 (got {accumulate})")
    full = stream.batches_per_pass()
    if full < accumulate:
        raise UserError(f"trainer.accumulate_grad_batches={accumulate} exceeds the {full} batches of an "
                        "epoch; lower it or trainer.batch_size")
    updates = full // accumulate
    return updates * accumulate, updates


@dataclass(frozen=True)
class Step:
    """What one optimizer step computes: the objectives' loss rows, balanced by ``weighting``."""

    objectives: Sequence[Objective]
    weighting: Weighting
    gradients: GradientOptions = GradientOptions()

    @property
    def names(self) -> list[str]:
        return [name for objective in self.objectives for name in objective.names]


@dataclass(frozen=True)
class LoopConfig:
    """The loop's settings, from a stage's ``trainer`` config (``from_trainer``)."""

    seed: int
    epochs: int
    accumulate: int = 1
    grad_clip: float | None = None
    log_every: int = 10
    log_grad_stats: bool = False
    checkpoint_every_steps: int = 0
    nonfinite: str = "raise"
    max_nonfinite_skips: int = 10
    monitor: str | None = None          # the record key that picks best.pt; None: no best.pt
    initial_eval: bool = False          # score the model before training (a history entry for epoch 0)
    show: tuple[str, ...] = ()          # record keys the epoch's log line shows
    hparams: Mapping[str, Any] = field(default_factory=dict)  # for TensorBoard's HParams tab

    @classmethod
    def from_trainer(cls, trainer: DictConfig, seed: int, **settings: Any) -> LoopConfig:
        return cls(seed=seed, epochs=trainer.epochs, accumulate=trainer.get("accumulate_grad_batches", 1),
                   grad_clip=trainer.grad_clip, log_every=trainer.log_every,
                   log_grad_stats=trainer.get("log_grad_stats", False),
                   checkpoint_every_steps=trainer.checkpoint_every_steps, nonfinite=trainer.nonfinite,
                   max_nonfinite_skips=trainer.max_nonfinite_skips, **settings)


def fit(state: TrainState, streams: Sequence[Stream], step: Step, evaluate: Evaluate, config: LoopConfig,
        run: RunDir, rt: Runtime, final: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Train ``state`` for the remaining epochs of ``config``, scoring each epoch with ``evaluate(epoch,
    mean train losses) -> record``; then return ``final()`` (e.g. the best epoch's test scores), which also goes
    to TensorBoard with the run's hyper-parameters. ``state`` may come from a checkpoint (``resumed_from``)."""
    return _Loop(state, streams, step, evaluate, config, run, rt).run(final)


class _Loop:
    def __init__(self, state: TrainState, streams: Sequence[Stream], step: Step, evaluate: Evaluate,
                 config: LoopConfig, run: RunDir, rt: Runtime) -> None:
        self.state, self.streams, self.step, self.evaluate = state, list(streams), step, evaluate
        self.config, self.run_dir, self.rt = config, run, rt
        self.micro_batches, _ = epoch_plan(self.streams[0], config.accumulate)
        self.layout = {"seed": config.seed, "trainer.batch_size": self.streams[0].batch_size,
                       "trainer.accumulate_grad_batches": config.accumulate, "batches_per_epoch": self.micro_batches,
                       **{f"{s.name}.batch_size": s.batch_size for s in self.streams[1:]}}
        self.guard = NonFiniteGuard(config.nonfinite, config.max_nonfinite_skips, last_good=run.last)
        self.guard.skipped = state.nonfinite_skips
        model, weighting = state.model, step.weighting
        self.shared = [p for p in model.shared_parameters() if p.requires_grad]
        self.own = [rows for objective in step.objectives for rows in objective.own_parameters(model)]
        self.grad_groups = {**{k: v for o in step.objectives for k, v in o.parameter_groups(model).items()},
                            "the shared encoder": self.shared,
                            "the weighting's parameters": list(weighting.parameters())}

    # --- the run ------------------------------------------------------------------------------------------------

    def run(self, final: Callable[[], dict[str, float]]) -> dict[str, float]:
        state, config = self.state, self.config
        check_layout(state.position, self.layout)
        if not state.history and config.initial_eval:  # the model before any training: the reference to beat
            state.history.append({"epoch": 0, **self.evaluate(0, {})})  # (before any write: it may refuse a value)
            log.info("epoch 0 (before training)  %s", self.describe(state.history[0]))
        self.run_dir.prepare(state.config)  # only now: a launch refused above has written nothing
        self.tb = TensorBoard(self.run_dir.tensorboard, purge_step=state.step + 1 if state.resumed_from else None)
        with progress() as self.bar, PreemptionGuard() as self.preemption:
            for epoch in range(state.epoch, config.epochs):
                self.train_epoch(epoch)
        if not self.run_dir.last.exists():  # no epoch to train (pretrain trainer.epochs=0): the initial model
            self.save(state.history[0] if state.history else {})
        results = final()
        self.tb.hparams(config.hparams, results)
        self.tb.close()
        return results

    def train_epoch(self, epoch: int) -> None:
        state, config, rt = self.state, self.config, self.rt
        state.model.train()
        augment = {s.name: generator(config.seed, s.augment_id, epoch, device=rt.device) for s in self.streams}
        self.step.weighting.generator = generator(config.seed, WEIGHTING, epoch, device=rt.device)
        generators = {**{f"augment/{name}": g for name, g in augment.items()},
                      "weighting": self.step.weighting.generator}
        # Resumed mid-epoch: the same batches and random draws, from where it stopped.
        first, counted, loss_sum = resume_epoch(state.position, torch.zeros(len(self.step.names), device=rt.device),
                                                generators)
        state.position = None
        bar = self.bar.add_task(f"epoch {epoch + 1}/{config.epochs}", total=self.micro_batches, completed=first,
                                rate="")
        primary, *others = self.streams
        batches = zip(primary.batches(config.seed, epoch, first, cycle=False),  # the others cycle: no end
                      *(s.batches(config.seed, epoch, first, cycle=True) for s in others), strict=False)
        seen, tic, self.last_jacobian, cycle_ok = 0, time.perf_counter(), None, True
        for i, group in enumerate(itertools.islice(batches, self.micro_batches - first), start=first):
            if i % config.accumulate == 0:
                state.optimizer.zero_grad(set_to_none=True)
                cycle_ok = True
            inputs = {s.name: batch for s, batch in zip(self.streams, group, strict=True)}
            cycle_ok, stepped, loss = self.micro_step(epoch, i, inputs, augment, cycle_ok)
            if loss is not None:
                loss_sum += loss
                counted += 1
            seen += group[0][0].shape[0]
            self.bar.update(bar, advance=1, rate=f"{seen / (time.perf_counter() - tic):,.0f} img/s")
            # Between epoch ends only: the last step's state is saved whole by the epoch end below.
            updating = (i + 1) % config.accumulate == 0
            if updating and i + 1 < self.micro_batches and (
                    self.preemption.requested or periodic_save(config.checkpoint_every_steps, stepped, state.step)):
                state.position = epoch_position(i + 1, self.layout, loss_sum, counted, generators)
                self.save(state.history[-1] if state.history else {})
                state.position = None
                if self.preemption.requested:
                    self.preemption.stop(self.run_dir.last, f"epoch {epoch + 1}, step {state.step}")
        self.bar.remove_task(bar)
        self.end_epoch(epoch, loss_sum / max(counted, 1), seen, time.perf_counter() - tic)

    def micro_step(self, epoch: int, i: int, inputs: dict[str, Batch], augment: dict[str, torch.Generator],
                   cycle_ok: bool) -> tuple[bool, bool, Tensor | None]:
        """One micro-batch: forward, the non-finite check, backward, and at a cycle's end the update. Returns
        (the cycle is still good, an update was taken, the losses to count or None)."""
        state, config, rt, step = self.state, self.config, self.rt, self.step
        prepared = [o.prepare(inputs[o.stream], augment[o.stream]) for o in step.objectives]
        with autocast(rt.device, rt.precision):
            losses, outputs = self.losses(prepared)
        # A non-finite loss never reaches a backward pass or the weighting method: its cycle is dropped.
        cycle_ok = cycle_ok and self.guard.losses_ok(losses, step.names, epoch, state.step)
        updating = (i + 1) % config.accumulate == 0  # the last micro-batch of an accumulation cycle
        log_now = updating and cycle_ok and (state.step + 1) % config.log_every == 0
        jac = None
        if cycle_ok:
            features = outputs[0].shared if len(outputs) == 1 else None
            jac = backward(losses, self.shared, self.own, step.weighting, step.gradients, features, state.scaler,
                           want_jacobian=log_now and config.log_grad_stats, grad_scale=1 / config.accumulate)
        stepped = updating and cycle_ok and (state.scaler.is_enabled()
                                             or self.guard.grads_ok(self.grad_groups, epoch, state.step))
        if stepped:  # (fp16 overflow is the grad scaler's: it skips that step itself)
            apply_gradients(state.optimizer, state.scheduler, state.scaler, config.grad_clip)
            if step.weighting.needs_post_step_losses:  # e.g. FAMO: the same batch under the updated model
                with torch.no_grad(), autocast(rt.device, rt.precision):
                    step.weighting.step_end(self.losses(prepared)[0])
            state.step += 1
            if log_now:
                self.log_step(losses.detach(), jac)
        return cycle_ok, stepped, losses.detach() if cycle_ok else None

    def losses(self, prepared: list[Any]) -> tuple[Tensor, list[Any]]:
        results = [o.losses(self.state.model, p) for o, p in zip(self.step.objectives, prepared, strict=True)]
        return torch.cat([losses for losses, _ in results]), [output for _, output in results]

    def end_epoch(self, epoch: int, mean_losses: Tensor, seen: int, seconds: float) -> None:
        state, config = self.state, self.config
        self.step.weighting.epoch_end(mean_losses)
        if self.last_jacobian is not None:
            self.tb.image("grad/cosines", cosine_heatmap(self.last_jacobian), state.step)
        train_losses = dict(zip(self.step.names, mean_losses.tolist(), strict=True))
        record = {**self.evaluate(epoch + 1, train_losses), "images_per_s": seen / seconds}
        if self.guard.skipped:
            record["nonfinite_skips"] = self.guard.skipped
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch + 1, **record})
        self.tb.scalars(record, state.step)  # one x-axis (the global step) for every curve
        improved = False
        if config.monitor is not None:
            best = state.best or {"epoch": 0, "value": math.nan}
            improved = best["epoch"] == 0 or is_better(config.monitor, record[config.monitor], best["value"])
            if improved:
                state.best = {"epoch": epoch + 1, "value": record[config.monitor]}
                state.save(self.run_dir.best, record, full=False)
        log.info("epoch %d/%d  train loss %s  %s%s  (%.1fs, %.0f img/s)", epoch + 1, config.epochs,
                 " ".join(f"{v:.3f}" for v in train_losses.values()), self.describe(record),
                 "  *best*" if improved else "", seconds, record["images_per_s"])
        self.save(record)
        if self.preemption.requested:  # signalled during the evaluation: the epoch is saved whole
            self.preemption.stop(self.run_dir.last, f"the end of epoch {epoch + 1}")

    # --- reporting and saving ----------------------------------------------------------------------------------

    def describe(self, record: Mapping[str, float]) -> str:
        return "  ".join(f"{k} {record[k]:.4f}" for k in self.config.show if k in record)

    def log_step(self, losses: Tensor, jac: Tensor | None) -> None:
        """Per-step TensorBoard scalars: each row's loss and weight, its gradient norm, the pairwise gradient
        cosines and the share of conflicting pairs, and the learning rate; the weight and gradient statistics
        also add to the run's averages (``grad_sums``)."""
        names, step, sums = self.step.names, self.state.step, self.state.grad_sums
        self.tb.scalars({f"train/{n}/loss": v for n, v in zip(names, losses.tolist(), strict=True)}, step)
        stats = {f"weights/{n}": v for n, v in zip(names, self.step.weighting.last_weights.tolist(), strict=True)}
        if jac is not None:
            stats.update(gradient_stats(jac, names))
            self.last_jacobian = jac
        self.tb.scalars({**stats, "train/loss": losses.sum().item(), "train/lr": current_lr(self.state.optimizer)},
                        step)
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
        sums["logged_steps"] = sums.get("logged_steps", 0.0) + 1

    def save(self, metrics: Mapping[str, Any]) -> None:
        """``last.pt``: everything, at the current step."""
        self.state.nonfinite_skips = self.guard.skipped
        self.state.save(self.run_dir.last, metrics, full=True)


def gradient_summary(grad_sums: Mapping[str, float]) -> dict[str, float]:
    """The logged weights and gradient statistics averaged over the logged steps."""
    logged = grad_sums.get("logged_steps", 0.0)
    return {k: v / logged for k, v in grad_sums.items() if k != "logged_steps"} if logged else {}
