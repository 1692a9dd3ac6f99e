"""A relaunch into a run directory with ``checkpoints/last.pt`` continues that run: it applies its overrides, or
refuses each one it cannot apply, by name, before anything is written.

The optimizer, the schedule, the model, the data, the weighting method's and the SSL method's states all come
back from ``last.pt``; a key that would change any of them is not applied by continuing (the optimizer's saved
state restores the former learning rate, for one) while every record would name the new value. So the new
resolved config is compared with the one stored in ``last.pt``, key by key: every difference is refused, in one
message naming each key, its value in the run and the value asked, except

- the keys of ``APPLICABLE``: how the job runs, not what it trains; applied and recorded;
- ``trainer.epochs``: applied where the longer (or shorter) run is exactly the one that a launch with that
  budget would have made: the epochs trained so far stay inside it, and the learning-rate schedule gave every
  step taken the rate it gives them with the new budget (``epochs_problem``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from mtlssl.config import instantiate, to_plain
from mtlssl.errors import UserError

# The keys a relaunch applies (and records): each says how the job runs, not what is trained or how. Where one
# changes the order of floating-point sums (another device, layout or evaluation chunk), it is by rounding only,
# as a rerun on another machine would.
APPLICABLE = (
    "resume",              # how the checkpoint to continue from is found
    "sweep_name",          # a sweep's folder name (a ${now:} stamp, new at every launch)
    "objective",           # which returned metric a sweeper reads; training never reads it
    "device",              # where it runs (a requeue may land on another machine); last.pt is mapped there
    "data.cache_dir",      # where decoded images are cached: the same images, from another folder
    "trainer.log_every",   # how often step scalars go to TensorBoard; logging draws nothing, updates nothing
    "trainer.log_grad_stats",  # whether those log steps also measure gradients (a side computation, no update)
    "trainer.eval_batch_size",  # evaluation chunks: the model is in eval mode, each image is scored alone
    "trainer.checkpoint_every_steps",  # when last.pt is also saved mid-epoch; a save draws and changes nothing
    "trainer.nonfinite",   # what a NaN/inf step does (stop or skip); every finite step is the same either way
    "trainer.max_nonfinite_skips",  # how many such skips before stopping
    "trainer.deterministic",  # whether torch must pick deterministic kernels: the same computation
    "trainer.channels_last",  # the memory layout of weights and images: the same computation
)
EPOCHS = "trainer.epochs"
MISSING = object()  # a key one of the two configs does not have


def applicable(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in APPLICABLE)


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a plain config by dotted key; lists are leaves (compared whole)."""
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(leaves(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def changed_keys(stored: Mapping[str, Any], asked: Mapping[str, Any], upgraded: bool) -> list[tuple[str, Any, Any]]:
    """(key, value in the run, value asked) of every key that differs, but the applicable ones and epochs. A node
    whose ``_target_`` changed is named by that key alone (its other keys belong to another builder). Keys a
    format-1 checkpoint's config predates (``upgraded``) are not compared: that run had no such setting."""
    before, now = leaves(stored), leaves(asked)
    changes = []
    for key in sorted(before.keys() | now.keys()):
        old, new = before.get(key, MISSING), now.get(key, MISSING)
        if old == new or key == EPOCHS or applicable(key) or (upgraded and old is MISSING):
            continue
        changes.append((key, old, new))
    retargeted = {k.removesuffix("_target_") for k, _, _ in changes if k.endswith("._target_")}
    return [c for c in changes if c[0].endswith("._target_") or not c[0].startswith(tuple(retargeted))]


def shown(value: Any) -> str:
    """A value as an override writes it: null, true, [a,b], {k: v}."""
    if value is MISSING:
        return "(not set)"
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
    return str(value)


def updates_per_epoch(ckpt: Mapping[str, Any]) -> int | None:
    """The run's optimizer updates per epoch, from its checkpoint: from the batch layout saved mid-epoch, else
    from the updates taken (those a non-finite step dropped included) over the epochs done; None if unknown."""
    train = ckpt["train"]
    position = train.get("position")
    if position is not None:
        layout = position["layout"]
        return layout["batches_per_epoch"] // layout.get("trainer.accumulate_grad_batches", 1)
    cycles, epochs = ckpt["step"] + train.get("nonfinite_skips", 0), ckpt["epoch"]
    return cycles // epochs if epochs and cycles % epochs == 0 else None


def schedule_rates(sched: Mapping[str, Any], epochs: int, per_epoch: int, steps: int) -> list[float]:
    """The rate multipliers the schedule ``sched`` gives steps 0..``steps`` of a run of ``epochs`` epochs."""
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = instantiate(OmegaConf.create(dict(sched)), "sched")(optimizer, total_steps=epochs * per_epoch,
                                                                   steps_per_epoch=per_epoch)
    if isinstance(scheduler, LambdaLR):
        return [float(scheduler.lr_lambdas[0](s)) for s in range(steps + 1)]
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def epochs_problem(ckpt: Mapping[str, Any], stored: Mapping[str, Any], asked: Mapping[str, Any]) -> str | None:
    """Why continuing the run of ``ckpt`` to the ``asked`` config's epochs would not be the run a launch with
    that budget makes; None when it would be (the same budget, or another that changes no step already taken).
    The schedule is the asked one (a changed schedule is refused by name anyway): a stored config is never
    instantiated."""
    before, epochs = stored.get("trainer", {}).get("epochs", MISSING), asked["trainer"]["epochs"]
    if before == epochs or before is MISSING:
        return None
    done, midway = ckpt["epoch"], ckpt["train"].get("position") is not None
    if not isinstance(epochs, int) or epochs < done + midway:
        return f"it has already trained {done} epochs{' and part of the next' if midway else ''}"
    step = ckpt["step"]
    if step == 0:  # no update taken yet: no rate used (the first one does not depend on the budget)
        return None
    per_epoch = updates_per_epoch(ckpt)
    if per_epoch is None:
        return "its checkpoint does not tell how many updates an epoch has, so the schedule cannot be checked"
    old = schedule_rates(asked["sched"], before, per_epoch, step)
    new = schedule_rates(asked["sched"], epochs, per_epoch, step)
    if old != new:
        first = next(s for s, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)
        return (f"with trainer.epochs={epochs} the learning-rate schedule would give update {first + 1} another "
                f"rate, but the run has taken {step} updates, and set the next one's rate, under "
                f"trainer.epochs={before}; the budget may change only where no update so far depends on it, e.g. "
                "within sched.warmup_epochs, or with sched=constant")
    return None


def check_relaunch(ckpt: Mapping[str, Any] | None, cfg: DictConfig, run_dir: str) -> None:
    """Refuse, in one message, every key of ``cfg`` this relaunch cannot apply to the run in ``ckpt``."""
    if ckpt is None:
        return
    stored, asked = ckpt.get("config") or {}, to_plain(cfg)
    refused = [f"{key}: {shown(old)} in the run, {shown(new)} asked"
               for key, old, new in changed_keys(stored, asked, upgraded=bool(ckpt.get("upgraded_from")))]
    problem = epochs_problem(ckpt, stored, asked)
    if problem is not None:
        refused.append(f"{EPOCHS}: {stored['trainer']['epochs']} in the run, {asked['trainer']['epochs']} asked "
                       f"({problem})")
    if refused:
        raise UserError(f"run directory '{run_dir}' holds a run (checkpoints/last.pt) that this launch continues, "
                        "and continuing it cannot apply "
                        f"{'this setting' if len(refused) == 1 else 'these settings'}: {'; '.join(refused)}. "
                        "Relaunch with the run's values (its resolved_config.yaml) to continue it, or start a new run "
                        "with hydra.run.dir=<new dir>")
