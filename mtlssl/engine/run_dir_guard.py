"""Refuse a launch into the wrong run directory before Hydra writes anything there.

Hydra saves ``<run dir>/.hydra/{config,hydra,overrides}.yaml`` before a stage's code runs, so a check in the
stage comes too late to keep an existing run's ``.hydra/`` intact. ``RunDirGuard``, a Hydra callback registered
in conf/common.yaml (``hydra.callbacks``), runs first:

- the run directory must be creatable and writable;
- a directory holding a run of another stage is refused, and so is ``resume=false`` over a ``checkpoints/last.pt``;
- a relaunch of the same stage (a resume, a SLURM requeue) keeps the previous launch's ``.hydra/*.yaml`` in
  ``.hydra/previous/<n>/`` before Hydra overwrites them;
- a ``-m`` sweep's directory must be writable (its job directories are new).

A refusal prints one message and exits with status 2, as a ``UserError`` in a stage does.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mtlssl.errors import UserError

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


def check_writable(path: Path, key: str) -> None:
    """Create ``path`` and a temporary file in it: the cheapest proof that the run can write there."""
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file of that name is in the way")
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mtlssl-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        raise UserError(f"{path} is not writable ({reason}); choose another with {key}=<dir>") from err


# The copy this process made (a relaunch), so that a launch the stage then refuses can be undone.
_launch_copy: Path | None = None


def undo_refused_launch() -> None:
    """Put the previous launch's ``.hydra/*.yaml`` back: the stage refused this relaunch (e.g. another method),
    so the run's record, which ``mtlssl reproduce`` reads, must stay the launch that made it."""
    global _launch_copy
    if _launch_copy is None or not _launch_copy.is_dir():
        return
    for record in _launch_copy.glob("*.yaml"):
        shutil.copy2(record, _launch_copy.parent.parent / record.name)
    shutil.rmtree(_launch_copy)
    if not any(_launch_copy.parent.iterdir()):  # .hydra/previous/ held only this launch's copy
        _launch_copy.parent.rmdir()
    _launch_copy = None


def keep_previous_launch(run_dir: Path) -> Path | None:
    """Copy the previous launch's ``.hydra/*.yaml`` to ``.hydra/previous/<n>/`` (n = 1, 2, ...), since Hydra is
    about to overwrite them; returns the copy, or None when there was nothing to keep."""
    records = sorted((run_dir / ".hydra").glob("*.yaml"))
    if not records:
        return None
    previous = run_dir / ".hydra" / PREVIOUS
    taken = [int(p.name) for p in previous.glob("*") if p.name.isdigit()]
    keep = previous / str(max(taken, default=0) + 1)
    keep.mkdir(parents=True)
    for record in records:
        shutil.copy2(record, keep / record.name)
    return keep


def guard_run_dir(run_dir: Path, stage: str, resume: Any) -> None:
    """Every check, then the copy: nothing is written before all of them have passed."""
    if run_dir.is_dir():
        check_stage(run_dir, stage)
        check_resume(run_dir, resume)
    check_writable(run_dir, "hydra.run.dir")
    global _launch_copy
    _launch_copy = keep_previous_launch(run_dir)


def _refuse(stage: str, err: UserError) -> None:
    print(f"mtlssl {cli_name(stage)}: error: {err}", file=sys.stderr)
    sys.exit(2)  # SystemExit passes through Hydra's callback and error handling


class RunDirGuard(Callback):
    """The Hydra callback: ``on_run_start`` runs before Hydra creates the run directory or writes ``.hydra/``."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # hydra.run.dir may use ${hydra:job.name}, which needs the Hydra config set: run_job sets it the same way
        # next, and ${now:...} is cached on the config, so the directory resolved here is the one Hydra uses.
        HydraConfig.instance().set_config(config)
        stage = str(config.hydra.job.name)
        try:
            guard_run_dir(Path(str(OmegaConf.select(config, "hydra.run.dir"))), stage, config.get("resume"))
        except UserError as err:
            _refuse(stage, err)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        stage = str(config.hydra.job.name)
        try:
            check_writable(Path(str(OmegaConf.select(config, "hydra.sweep.dir"))), "hydra.sweep.dir")
        except UserError as err:
            _refuse(stage, err)
