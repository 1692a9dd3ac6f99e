"""Refuse a launch into the wrong run directory before Hydra writes anything there.

Hydra saves ``<run dir>/.hydra/{config,hydra,overrides}.yaml`` before a stage's code runs, so a check in the
stage comes too late to keep an existing run's ``.hydra/`` intact. ``RunDirGuard``, a Hydra callback registered
in conf/common.yaml (``hydra.callbacks``), runs first:

- the run directory must be creatable and writable, and no other run may be using it: the guard holds its
  lock (``run_lock``) until the job ends, and refuses a launch into a directory in use, naming the holder;
- a directory holding a run of another stage is refused, and so is ``resume=false`` over a ``checkpoints/last.pt``;
- a relaunch of the same stage (a resume, a SLURM requeue) keeps the previous launch's ``.hydra/*.yaml`` in
  ``.hydra/previous/<n>/`` before Hydra overwrites them;
- a ``-m`` sweep's directory must be writable and not in use (its lock is held until the sweep ends); each job
  holds its own directory's lock (taken when the job starts: Hydra calls no hook before it writes a job's
  ``.hydra/``; a job refused there fails alone, as a stage's user error does).

A refusal prints one message and exits with status 2, as a ``UserError`` in a stage does.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mtlssl.engine import run_lock
from mtlssl.errors import UserError

log = logging.getLogger(__name__)

STAGE_OF_KIND = {"pretrain": "pretrain", "mtl": "train_mtl"}  # checkpoint kind -> the stage that writes it
KIND_OF_STAGE = {stage: kind for kind, stage in STAGE_OF_KIND.items()}
PREVIOUS = "previous"  # .hydra/previous/<n>/: earlier launches' Hydra records


def cli_name(stage: str) -> str:
    return stage.replace("_", "-")  # the job name train_mtl is the command `mtlssl train-mtl`


def last_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoints/last.pt`` of the run, or of its stages' sub-runs (a pipeline's pretrain/, train_mtl/, ...)."""
    return sorted([*run_dir.glob("checkpoints/last.pt"), *run_dir.glob("*/checkpoints/last.pt")])


def recorded_stage(run_dir: Path) -> tuple[str, str | None] | None:
    """(stage, checkpoint kind) of the run already in ``run_dir``: the stage from its ``.hydra/hydra.yaml`` job
    name (kind None), else from the kind of its ``checkpoints/last.pt``; None for a new or foreign directory."""
    try:
        record = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
        return str(record["hydra"]["job"]["name"]), None
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        pass  # no or unreadable record: ask the checkpoint
    try:  # mmap: only the small pickle is read, not the tensors
        kind = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True, mmap=True)["kind"]
    except Exception:  # missing or damaged: a damaged one is reported by the stage that loads it
        return None
    # a crafted file's kind may be anything (a list is not even hashable): only a known name counts
    return (STAGE_OF_KIND[kind], kind) if isinstance(kind, str) and kind in STAGE_OF_KIND else None


def check_stage(run_dir: Path, stage: str) -> None:
    """Refuse a directory that holds another stage's run: this stage would mix its files into it."""
    found = recorded_stage(run_dir)
    if found is None or found[0] == stage:
        return
    other, kind = found
    if kind is None:
        why = f"its .hydra/hydra.yaml names the job {other}"
    elif stage in KIND_OF_STAGE:  # in the words of the stage's own check (read_checkpoint), which this one precedes
        why = f"its checkpoints/last.pt is a {kind} checkpoint, but a {KIND_OF_STAGE[stage]} checkpoint is needed here"
    else:
        why = f"its checkpoints/last.pt is a {kind} checkpoint"
    raise UserError(f"run directory '{run_dir}' holds a {cli_name(other)} run ({why}); {cli_name(stage)} will not "
                    "write into another stage's run. Choose a new directory with hydra.run.dir=<dir>")


def check_resume(run_dir: Path, resume: Any) -> None:
    """Refuse resume=false over an existing checkpoint (the stage refuses too, but only after Hydra's writes)."""
    found = last_checkpoints(run_dir) if str(resume).lower() == "false" else []
    if found:
        raise UserError(f"run directory '{run_dir}' already holds {found[0].relative_to(run_dir)}; resume=false would "
                        "overwrite it. Use resume=auto to continue it, or a new hydra.run.dir=<dir>")


def make_dir(path: Path, key: str) -> None:
    """Create ``path`` (with its parents), or say why it cannot be."""
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file of that name is in the way")
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"{path} is not writable ({err.strerror or err}); choose another with {key}=<dir>") from err


def check_writable(path: Path, key: str) -> None:
    """Create ``path`` and a temporary file in it: the cheapest proof that the run can write there."""
    make_dir(path, key)
    try:
        fd, probe = tempfile.mkstemp(prefix=".mtlssl-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(f"{path} is not writable ({reason}); choose another with {key}=<dir>") from err


@dataclass
class Launch:
    """What a relaunch changed before the stage could refuse it: the previous ``.hydra/*.yaml``, kept in
    ``copy``, and the length and time of the run's log, which this launch appends to."""

    copy: Path
    log: Path
    log_size: int | None  # None: there was no log
    log_mtime_ns: int = 0


# The relaunch this process made, so that a launch the stage then refuses can be undone.
_launch: Launch | None = None


def undo_refused_launch() -> None:
    """Put the previous launch's ``.hydra/*.yaml`` back and cut this launch's lines off the log: the stage
    refused this relaunch, so the run's record, which ``mtlssl reproduce`` reads, must stay the launch that
    made it, and the directory as it was (the refusal itself went to the terminal)."""
    global _launch
    launch, _launch = _launch, None
    if launch is None or not launch.copy.is_dir():
        return
    for record in launch.copy.glob("*.yaml"):
        shutil.copy2(record, launch.copy.parent.parent / record.name)
    shutil.rmtree(launch.copy)
    if not any(launch.copy.parent.iterdir()):  # .hydra/previous/ held only this launch's copy
        launch.copy.parent.rmdir()
    if launch.log_size is None:
        launch.log.unlink(missing_ok=True)
    elif launch.log.is_file():
        os.truncate(launch.log, launch.log_size)
        os.utime(launch.log, ns=(launch.log_mtime_ns, launch.log_mtime_ns))


def keep_previous_launch(run_dir: Path, stage: str) -> Launch | None:
    """Copy the previous launch's ``.hydra/*.yaml`` to ``.hydra/previous/<n>/`` (n = 1, 2, ...), since Hydra is
    about to overwrite them, and note the log's length; returns the launch, or None when there was nothing to
    keep (a new run)."""
    records = sorted((run_dir / ".hydra").glob("*.yaml"))
    if not records:
        return None
    previous = run_dir / ".hydra" / PREVIOUS
    taken = [int(p.name) for p in previous.glob("*") if p.name.isdigit()]
    keep = previous / str(max(taken, default=0) + 1)
    keep.mkdir(parents=True)
    for record in records:
        shutil.copy2(record, keep / record.name)
    log_path = run_dir / f"{stage}.log"  # Hydra's job log (conf/hydra/job_logging): <run dir>/<job name>.log
    if not log_path.is_file():
        return Launch(keep, log_path, None)
    stat = log_path.stat()
    return Launch(keep, log_path, stat.st_size, stat.st_mtime_ns)


def guard_run_dir(run_dir: Path, stage: str, resume: Any) -> run_lock.RunLock:
    """Take the directory's lock, then every check, then the copy: nothing is written before all of them have
    passed (the lock file of a refused launch goes with it). Returns the lock, held until the job ends."""
    make_dir(run_dir, "hydra.run.dir")
    lock = run_lock.acquire(run_dir, f"mtlssl {cli_name(stage)}")
    try:
        check_writable(run_dir, "hydra.run.dir")
        check_stage(run_dir, stage)
        check_resume(run_dir, resume)
        global _launch
        _launch = keep_previous_launch(run_dir, stage)
    except BaseException:
        lock.release()
        raise
    return lock


def _refuse(stage: str, err: UserError) -> None:
    print(f"mtlssl {cli_name(stage)}: error: {err}", file=sys.stderr)
    sys.exit(2)  # SystemExit passes through Hydra's callback and error handling


# A sweep job's refusal (its directory in use), raised by the stage's error boundary so that only this job fails.
_job_refusal: UserError | None = None


def pending_refusal() -> UserError | None:
    """The refusal of the job about to run, once: ``run_stage`` raises it as the job's user error."""
    global _job_refusal
    refusal, _job_refusal = _job_refusal, None
    return refusal


def _report_takeover(lock: run_lock.RunLock | None) -> None:
    """Once logging is set up (the job has started): whose lock this run took over, or why it holds none."""
    if lock is not None and lock.took_over is not None:
        log.warning("took over the lock of %s from %s, which ended without releasing it (killed?)", lock.directory,
                    lock.took_over.describe())
        lock.took_over = None
    if lock is not None and lock.unchecked is not None:
        log.warning("%s cannot be locked: %s; a second run launched into it is refused only from this host",
                    lock.directory, lock.unchecked)
        lock.unchecked = None


class RunDirGuard(Callback):
    """The Hydra callback: ``on_run_start`` runs before Hydra creates the run directory or writes ``.hydra/``.
    It holds the run directory's lock (a sweep's and each job's) until the run (sweep, job) ends; a process that
    dies loses it to the kernel, and one that exits releases it (``run_lock``'s atexit)."""

    def __init__(self) -> None:
        self.run: run_lock.RunLock | None = None
        self.sweep: run_lock.RunLock | None = None
        self.job: run_lock.RunLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # hydra.run.dir may use ${hydra:job.name}, which needs the Hydra config set: run_job sets it the same way
        # next, and ${now:...} is cached on the config, so the directory resolved here is the one Hydra uses.
        HydraConfig.instance().set_config(config)
        stage = str(config.hydra.job.name)
        try:
            self.run = guard_run_dir(Path(str(OmegaConf.select(config, "hydra.run.dir"))), stage,
                                     config.get("resume"))
        except UserError as err:
            _refuse(stage, err)

    def on_run_end(self, config: DictConfig, config_name: str | None, job_return: JobReturn, **kwargs: Any) -> None:
        if self.run is not None:
            self.run.release()
            self.run = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        stage = str(config.hydra.job.name)
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        try:
            check_writable(sweep_dir, "hydra.sweep.dir")
            self.sweep = run_lock.acquire(sweep_dir, f"mtlssl {cli_name(stage)} sweep", key="hydra.sweep.dir")
        except UserError as err:
            _refuse(stage, err)
        _report_takeover(self.sweep)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep is not None:
            self.sweep.release()
            self.sweep = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep's job (in this process or a launcher's worker) locks its own directory; a single run's lock
        is already held (``on_run_start``)."""
        if config.hydra.mode != RunMode.MULTIRUN:
            _report_takeover(self.run)
            return
        global _job_refusal
        job_dir = Path(str(config.hydra.runtime.output_dir))
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        try:
            self.job = run_lock.acquire(job_dir, f"mtlssl {cli_name(str(config.hydra.job.name))} sweep job",
                                        key="hydra.sweep.dir", ignore=(sweep_dir,))
        except UserError as err:
            _job_refusal = err
            return
        _report_takeover(self.job)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if self.job is not None:
            self.job.release()
            self.job = None
