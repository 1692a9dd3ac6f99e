"""What every stage's thin ``main`` shares: Hydra's output directory, the error boundary, the final report,
and the objective a sweeper (e.g. Optuna) optimises."""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.markup import escape

from mtlssl.config import check_config_targets, check_override_types, config_dir, override_key
from mtlssl.engine.preemption import EXIT_PREEMPTED, Preempted
from mtlssl.engine.relaunch import check_relaunch
from mtlssl.engine.rng import seed_everything
from mtlssl.engine.run_dir import RunDir
from mtlssl.engine.run_dir_guard import pending_refusal, undo_refused_launch
from mtlssl.engine.runtime import Runtime
from mtlssl.errors import UserError
from mtlssl.reporting.console import console

log = logging.getLogger("mtlssl")

StageRun = Callable[[DictConfig, Path], dict[str, float]]


def check_launch(cfg: DictConfig, run_dir: Path, kind: str, min_epochs: int) -> dict | None:
    """The checks of a training stage's launch that need nothing built, none of which writes: the checkpoint to
    resume from, whose run must take every setting of ``cfg`` (``check_relaunch``: a relaunch applies its
    overrides or refuses them by name), and the trainer settings. Returns that checkpoint (None: a new run)."""
    resume = RunDir(run_dir).resume_state(cfg.resume, kind)
    check_relaunch(resume, cfg, str(run_dir))
    check_trainer(cfg.trainer, min_epochs)
    return resume


def start_training(cfg: DictConfig, run_dir: Path, kind: str, min_epochs: int) -> tuple[Runtime, RunDir, dict | None]:
    """What a training stage does first: the launch's checks (``check_launch``), the runtime, the run directory
    and the checkpoint to resume from, and the seed. Nothing is written to the run directory until the loop
    starts (``RunDir.prepare``), after every stage has built its parts."""
    resume = check_launch(cfg, run_dir, kind, min_epochs)
    rt = Runtime.create(cfg.device, cfg.precision, cfg.trainer.channels_last)
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    return rt, RunDir(run_dir), resume


def check_trainer(trainer: DictConfig, min_epochs: int) -> None:
    """The loop settings that would otherwise fail late (a division by zero, a missing best.pt), named."""
    if not trainer.epochs >= min_epochs:
        raise UserError(f"trainer.epochs must be >= {min_epochs} (got {trainer.epochs}); set e.g. trainer.epochs=10")
    for key in ("batch_size", "eval_batch_size", "log_every"):
        if not trainer[key] >= 1:
            raise UserError(f"trainer.{key} must be >= 1 (got {trainer[key]}); set e.g. trainer.{key}=64")
    clip = trainer.grad_clip
    if clip is not None and not clip >= 0:  # a negative norm would flip the gradients' sign
        raise UserError(f"trainer.grad_clip must be > 0, or null for no clipping (got {clip}); "
                        "set e.g. trainer.grad_clip=1.0")
    if not trainer.checkpoint_every_steps >= 0:
        raise UserError(f"trainer.checkpoint_every_steps must be >= 0 (got {trainer.checkpoint_every_steps}); "
                        "0 saves last.pt at epoch ends only")


def check_overrides(cfg: DictConfig) -> None:
    """The command line's value overrides keep their defaults' types (``optim.lr=abc`` is one clear error). The
    defaults are this stage's config composed again with the same group choices, without the value overrides."""
    hydra_cfg = HydraConfig.get()
    choices = {group: choice for group, choice in hydra_cfg.runtime.choices.items()
               if choice is not None and not group.startswith("hydra")}
    values = [o for o in hydra_cfg.overrides.task if override_key(o) not in choices]
    if not values:
        return
    again = [f"{group}={choice}" for group, choice in choices.items()]
    if GlobalHydra.instance().is_initialized():
        defaults = compose(config_name=hydra_cfg.job.config_name, overrides=again)
    else:  # a launcher's worker process: no Hydra of its own
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            defaults = compose(config_name=hydra_cfg.job.config_name, overrides=again)
    check_override_types(cfg, defaults, values)


def check_objective(objective: str | None) -> None:
    """Refuse, before any training, an objective that would tune on the test split."""
    if objective is not None and "test" in str(objective).split("/"):
        raise UserError(f"objective={objective} is a test metric: tune on a validation metric (e.g. "
                        f"{str(objective).replace('test/', 'val/', 1)}) and keep the test split for the final report")


def objective_value(metrics: Mapping[str, float], objective: str | None) -> float | None:
    """``metrics[objective]`` as a float for a sweeper, or None when no objective is configured. A NaN (a
    diverged run) is an error, so that a sweeper records the job as failed (hydra-optuna-sweeper 1.3 with
    optuna 2.x crashes the whole search on a returned NaN; a failed job counts against max_failure_rate)."""
    if objective is None:
        return None
    if objective not in metrics:
        names = ", ".join(sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))) or "none"
        raise UserError(f"objective={objective} is not a metric this stage returns; it returns: {names}")
    value = metrics[objective]
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"objective={objective} is {value!r}, not a number")
    value = float(value)
    if math.isnan(value):
        raise UserError(f"objective {objective} is NaN: the run diverged (try a lower optim.lr, or "
                        "trainer.grad_clip); a sweeper records this job as failed")
    return value


def run_stage(run: StageRun, cfg: DictConfig) -> float | None:
    """Call a stage's ``run`` in Hydra's output directory and return ``metrics[cfg.objective]`` (None when
    ``objective`` is null), the value a sweeper such as Optuna optimises. A ``UserError`` ends the process
    with one clear message and exit status 2 (``HYDRA_FULL_ERROR=1`` shows the traceback instead); in a
    sweep it fails only its own job, and the sweep goes on. A preemption signal (after ``last.pt`` is saved)
    ends the process, sweep included, with EXIT_PREEMPTED (75): a relaunch continues where it stopped."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    objective = cfg.get("objective")
    try:
        refusal = pending_refusal()  # a sweep job whose directory another run is using
        if refusal is not None:
            raise refusal
        check_overrides(cfg)
        check_config_targets(cfg)  # before anything is built or written: a pipeline's last stage's too
        check_objective(objective)
        metrics = run(cfg, run_dir)
        value = objective_value(metrics, objective)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            undo_refused_launch()
            raise
        log.error("%s", err)
        undo_refused_launch()  # a refused relaunch leaves the run's .hydra/ record and its log as they were
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # an exception, not an exit: Hydra records this job as failed and runs the rest of the sweep
        sys.exit(2)
    except Preempted as stop:
        again = (f"relaunch the sweep with hydra.sweep.dir={hydra_cfg.sweep.dir}" if hydra_cfg.mode == RunMode.MULTIRUN
                 else f"relaunch the same command with hydra.run.dir={run_dir}")
        log.warning("%s; %s to continue from there", stop, again)
        sys.exit(EXIT_PREEMPTED)
    console.print(f"run directory: [bold]{escape(str(run_dir))}[/]", highlight=False)  # a sweep's tasks=[x]
    if objective is not None:
        log.info("objective %s = %.6g", objective, value)
    return value
