"""The run-directory guard holds the directory's lock for the whole job: a second run launched into it (or into a
sweep in use, or into a job directory in use) is refused before Hydra writes anything, naming the holder; a
killed run's lock is taken over; the pipeline's stages run under its one lock. (The guard's other checks are in
tests/test_bad_input.py.)"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from mtlssl.config import config_dir
from mtlssl.engine import run_dir_guard, run_lock
from mtlssl.engine.run_dir_guard import RunDirGuard, recorded_stage
from tests.conftest import TINY, TINY_TRAIN
from tests.engine.test_run_lock import hold, let_go
from tests.test_cli import own_outputs, run_cli

# train-mtl that pauses inside its PAUSE_AT-th optimizer step (0: never) until the file GO exists, having made
# <GO>.paused: a run that is certainly under way while another is launched.
RUNNER = r"""
import os, sys, time
from pathlib import Path
import mtlssl.engine.loop as loop
pause_at, go = int(os.environ["PAUSE_AT"]), Path(os.environ["GO"])
real, calls = loop.apply_gradients, {"n": 0}

def pausing(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == pause_at:
        Path(str(go) + ".paused").touch()
        deadline = time.monotonic() + 300
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    real(*args, **kwargs)

loop.apply_gradients = pausing
sys.argv = ["mtlssl-train-mtl", *sys.argv[1:]]
from mtlssl.stages import train_mtl
train_mtl.main()
"""
OVERRIDES = [*TINY, "trainer.epochs=2", "trainer.batch_size=16", "trainer.eval_batch_size=64", "weighting=dwa"]


def start(run_dir: Path, go: Path, pause_at: int) -> subprocess.Popen:
    env = {**os.environ, "PAUSE_AT": str(pause_at), "GO": str(go), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, *OVERRIDES, f"hydra.run.dir={run_dir}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def results(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for record in metrics["history"]:
        record.pop("images_per_s")
    return metrics


def test_a_second_run_into_a_directory_in_use_is_refused_and_the_first_runs_as_if_alone(tmp_path: Path) -> None:
    alone = start(tmp_path / "alone", tmp_path / "never", pause_at=0)
    assert alone.wait(timeout=300) == 0, alone.communicate()[0][-3000:]
    run_dir, go = tmp_path / "run", tmp_path / "go"
    first = start(run_dir, go, pause_at=3)  # stopped inside its third step: under way, files half made
    deadline = time.monotonic() + 300
    while not Path(f"{go}.paused").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()[0][-3000:]
    before = own_outputs(run_dir)

    second = run_cli("mtlssl", "train-mtl", *OVERRIDES, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    text = " ".join((second.stdout + second.stderr).split())
    assert second.returncode == 2 and "Traceback" not in text, text[-3000:]
    assert text.count("is in use by another mtlssl run") == 1, text
    assert f"(mtlssl train-mtl, PID {first.pid} on host {socket.gethostname()}, started " in text, text
    assert own_outputs(run_dir) == before  # not one byte of the second: no .hydra/, no log line, no lock

    go.touch()
    output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output[-3000:]
    assert results(run_dir) == results(tmp_path / "alone")  # what it would have been alone
    assert "in use" not in (run_dir / "train_mtl.log").read_text()
    assert not (run_dir / ".lock").exists()


def test_a_pipeline_runs_its_stages_under_its_one_lock(tmp_path: Path) -> None:
    stages = [f"{s}.{o}" for s in ("pretrain", "train_mtl") for o in TINY_TRAIN]
    out = run_cli("mtlssl", "pipeline", *TINY, *stages, "pretrain.ssl.hidden_dim=16", "pretrain.ssl.out_dim=8",
                  "eval.batch_size=64", "scratch_baseline=false", "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").is_file() and not list((tmp_path / "run").rglob(".lock"))


# --- the guard in process, as Hydra calls it ------------------------------------------------------------------


@pytest.fixture
def hydra_cfg() -> Iterator[Callable[..., DictConfig]]:
    """A stage's config with its hydra node, as Hydra hands it to callbacks; HydraConfig is restored after."""
    before = HydraConfig.instance().cfg

    def make(stage: str, *overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=stage, overrides=list(overrides), return_hydra_config=True)

    yield make
    HydraConfig.instance().cfg = before
    run_lock.release_all()


def refused(hook: Callable[[], None], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        hook()
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def as_sweep_job(cfg: DictConfig, job_dir: Path) -> DictConfig:
    """``cfg`` as Hydra hands it to ``on_job_start`` for a job of a ``-m`` sweep."""
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.runtime.output_dir = str(job_dir)
    return cfg


def test_the_guard_refuses_a_directory_in_use_before_writing(hydra_cfg: Callable[..., DictConfig], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    holder = hold(run_dir)
    before = own_outputs(run_dir)
    for stage in ("train_mtl", "pretrain", "pipeline", "eval"):
        cfg = hydra_cfg(stage, f"hydra.run.dir={run_dir}")
        err = refused(lambda cfg=cfg: RunDirGuard().on_run_start(cfg), capsys)
        assert err.startswith(f"mtlssl {stage.replace('_', '-')}: error: run directory '{run_dir}' is in use by "
                              f"another mtlssl run (mtlssl train-mtl, PID {holder.pid} on host ")
        assert own_outputs(run_dir) == before
    inside = run_dir / "pretrain"  # a pipeline's stage directory, while the pipeline runs
    err = refused(lambda: RunDirGuard().on_run_start(hydra_cfg("pretrain", f"hydra.run.dir={inside}")), capsys)
    assert f"it lies inside the run directory '{run_dir}', which is in use" in err
    let_go(holder)


def test_the_guard_takes_over_a_killed_runs_lock_and_says_so(hydra_cfg: Callable[..., DictConfig], tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    dead = hold(tmp_path, then="kill")
    cfg = hydra_cfg("train_mtl", f"hydra.run.dir={tmp_path}")
    guard = RunDirGuard()
    guard.on_run_start(cfg)
    with caplog.at_level(logging.WARNING):
        guard.on_job_start(cfg)
    assert f"took over the lock of {tmp_path} from mtlssl train-mtl, PID {dead.pid} on host" in caplog.text
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    guard.on_run_end(cfg, None, JobReturn())
    assert not (tmp_path / ".lock").exists()


def test_a_sweep_in_use_is_refused_and_each_job_locks_its_own_directory(
        hydra_cfg: Callable[..., DictConfig], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = tmp_path / "sweep"
    cfg = hydra_cfg("train_mtl", f"hydra.sweep.dir={sweep}")
    job = as_sweep_job(cfg, sweep / "lr=0.1" / "seed=0")
    job_dir = Path(job.hydra.runtime.output_dir)
    other = hold(sweep, what="mtlssl train-mtl sweep")  # another sweep into the same directory
    err = refused(lambda: RunDirGuard().on_multirun_start(cfg), capsys)
    assert f"'{sweep}' is in use by another mtlssl run (mtlssl train-mtl sweep, PID {other.pid} " in err
    assert "hydra.sweep.dir=<dir>" in err
    let_go(other)

    guard = RunDirGuard()  # this sweep, its jobs in this process (Hydra's basic launcher)
    guard.on_multirun_start(cfg)
    job_dir.mkdir(parents=True)
    guard.on_job_start(job)
    assert run_dir_guard.pending_refusal() is None and run_lock.held_here(job_dir) is not None
    guard.on_job_end(job, JobReturn())
    assert run_lock.held_here(job_dir) is None and not (job_dir / ".lock").exists()
    guard.on_multirun_end(cfg)
    assert not (sweep / ".lock").exists()

    launcher = hold(sweep, what="mtlssl train-mtl sweep")  # the sweep's launching process; the job in a worker
    guard.on_job_start(job)
    assert run_dir_guard.pending_refusal() is None and run_lock.held_here(job_dir) is not None
    guard.on_job_end(job, JobReturn())
    let_go(launcher)

    other = hold(sweep, job_dir, what="mtlssl train-mtl sweep job")  # the same job run twice at once
    guard.on_job_start(job)
    refusal = run_dir_guard.pending_refusal()  # run_stage raises it: this job alone fails, the sweep goes on
    assert refusal is not None and f"PID {other.pid}" in str(refusal) and run_dir_guard.pending_refusal() is None
    assert run_lock.held_here(job_dir) is None
    let_go(other)


@pytest.mark.parametrize("content,found", [
    ({"kind": "mtl"}, ("train_mtl", "mtl")), ({"kind": ["mtl"]}, None), ({"kind": {"a": 1}}, None),
    ({"kind": 3}, None), ({"kind": "other"}, None), ([1, 2], None), ({}, None),
])
def test_the_kind_of_a_crafted_last_checkpoint_never_crashes_the_guard(content: Any, found: Any,
                                                                       tmp_path: Path) -> None:
    """The guard reads a checkpoint's kind from a file it did not write: any content is a plain answer."""
    (tmp_path / "checkpoints").mkdir()
    torch.save(content, tmp_path / "checkpoints" / "last.pt")
    assert recorded_stage(tmp_path) == found
