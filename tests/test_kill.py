"""The kill test: SIGKILL a training process at five or six points, mid-step and mid-write, relaunching after
each, for train-mtl and for pretrain (the one loop under both).

Every kill leaves only complete checkpoints under their real names (a partial write stays in a temporary
file that is never read and is cleared on the next launch); every relaunch resumes from the last complete
checkpoint; and the final metrics equal those of a run that was never interrupted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mtlssl.engine.preemption import EXIT_PREEMPTED
from mtlssl.engine.state import read_checkpoint
from tests.conftest import TINY

# train-mtl: 3 epochs of 4 steps, last.pt also every 2 steps: checkpoints at steps 2, 4 (+best), 6, 8 (+best), 10,
# 12 (+best). pretrain: 2 epochs of 6 steps (96 unlabelled images): last.pt at steps 2, 4, 6, 8, 10, 12.
OVERRIDES = [*TINY, "trainer.epochs=3", "trainer.batch_size=16", "trainer.eval_batch_size=64",
             "trainer.checkpoint_every_steps=2", "weighting=dwa"]
PRETRAIN = [*TINY, "trainer.epochs=2", "trainer.batch_size=16", "trainer.eval_batch_size=64",
            "trainer.checkpoint_every_steps=2", "ssl.hidden_dim=16", "ssl.out_dim=8"]

# Run train-mtl, killing this process with SIGKILL at one point given as <event>:<file>:<n> (the n-th time):
#   step::n           inside the n-th optimizer step
#   partial:<file>:n  half way through writing the n-th <file> (its bytes so far flushed to disk)
#   written:<file>:n  the n-th <file> complete in its temporary file, before the rename
#   renamed:<file>:n  right after the n-th <file> was renamed into place
RUNNER = r"""
import contextlib, os, signal, sys
event, target, n = os.environ["KILL_AT"].split(":")
seen = {"count": 0}

def hit(name, path=""):
    if name == event and (not target or os.path.basename(str(path)) == target):
        seen["count"] += 1
        if seen["count"] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)

import importlib
import mtlssl.engine.loop as loop, mtlssl.engine.state as state, mtlssl.io as files

class HalfWrites:
    def __init__(self, f, path):
        self.f, self.path, self.written = f, path, 0
    def write(self, data):  # past 500 bytes: the first half of this chunk reaches the disk, then the kill point
        size, half = len(data), 0
        if self.written <= 500 < self.written + size:
            half = size // 2
            self.f.write(data[:half]); self.f.flush(); os.fsync(self.f.fileno())
            hit("partial", self.path)
        self.f.write(data[half:])
        self.written += size
        return size
    def __getattr__(self, name):
        return getattr(self.f, name)

real_open = files.atomic_open
@contextlib.contextmanager
def killing_open(path):
    with real_open(path) as f:
        yield HalfWrites(f, path)
        hit("written", path)
    hit("renamed", path)
state.atomic_open = files.atomic_open = killing_open

real_apply = loop.apply_gradients
def killing_apply(*args, **kwargs):
    hit("step")
    real_apply(*args, **kwargs)
loop.apply_gradients = killing_apply

stage = sys.argv[1]
sys.argv = [f"mtlssl-{stage}", *sys.argv[2:]]
importlib.import_module(f"mtlssl.stages.{stage}").main()
"""

# (kill point, the step the NEXT launch resumes from)
MTL_KILLS = [
    ("step::3", 2),              # mid-step 3: last.pt is the periodic one of step 2
    ("partial:last.pt:1", 2),    # half of epoch 1's last.pt written: the step-2 one stays
    ("written:best.pt:1", 2),    # epoch 1's best.pt complete but not yet renamed
    ("renamed:last.pt:2", 6),    # just after the step-6 last.pt (mid-epoch 2) replaced the step-4 one
    ("step::3", 8),              # mid-step 9 of the relaunch from step 6: epoch 2's last.pt (step 8) stands
    ("partial:metrics.json:1", 12),  # training done, metrics.json half written
]
PRETRAIN_KILLS = [
    ("step::3", 2),              # mid-step 3: last.pt is the periodic one of step 2
    ("partial:last.pt:1", 2),    # half of the step-4 last.pt written: the step-2 one stays
    ("renamed:last.pt:2", 6),    # just after epoch 1's last.pt (step 6) replaced the step-4 one
    ("step::3", 8),              # mid-step 9 of the relaunch from step 6: the step-8 last.pt stands
    ("partial:metrics.json:1", 12),  # training done, metrics.json half written
]


def launch(stage: str, overrides: list[str], run_dir: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT": kill_at or "none::0", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", RUNNER, stage, *overrides, f"hydra.run.dir={run_dir}"], env=env,
                          capture_output=True, text=True, timeout=300)


def results(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for record in metrics["history"]:
        record.pop("images_per_s", None)
    metrics.get("final", {}).pop("images_per_s", None)
    return metrics


@pytest.mark.parametrize(("stage", "overrides", "kills"), [("train_mtl", OVERRIDES, MTL_KILLS),
                                                           ("pretrain", PRETRAIN, PRETRAIN_KILLS)],
                         ids=["train_mtl", "pretrain"])
def test_sigkill_at_every_point_then_resume_gives_identical_metrics(stage: str, overrides: list[str],
                                                                     kills: list[tuple[str, int]],
                                                                     tmp_path: Path) -> None:
    reference, run = tmp_path / "reference", tmp_path / "killed"
    assert launch(stage, overrides, reference, None).returncode == 0
    for kill_at, resumes_from in kills:
        out = launch(stage, overrides, run, kill_at)
        assert out.returncode == -signal.SIGKILL, f"{kill_at} was never reached:\n{out.stderr[-2000:]}"
        for ckpt in (run / "checkpoints").glob("*.pt"):  # only complete checkpoints bear a real name
            read_checkpoint(ckpt, "killed run")
        last = read_checkpoint(run / "checkpoints" / "last.pt", "killed run")
        assert last["step"] == resumes_from, kill_at
    out = launch(stage, overrides, run, None)
    assert out.returncode == 0, out.stderr[-3000:]
    assert results(run) == results(reference)
    assert not [p.name for p in run.rglob(".*.tmp*")]  # the partial writes were cleared, never read
    resumed = [line.split("step ")[-1] for line in (run / f"{stage}.log").read_text().splitlines()
               if "resuming from" in line]
    assert [int(s) for s in resumed] == [r for _, r in kills]


def test_sigterm_from_outside_saves_and_exits_75(tmp_path: Path) -> None:
    """As a scheduler preempts: SIGTERM while training; the process saves last.pt at the next step and exits 75."""
    args = [*OVERRIDES, "trainer.epochs=200", "trainer.checkpoint_every_steps=0", f"hydra.run.dir={tmp_path}"]
    job = subprocess.Popen([sys.executable, "-m", "mtlssl.cli", "train-mtl", *args], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    last = tmp_path / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and job.poll() is None and time.monotonic() < deadline:  # epoch 1 is done
        time.sleep(0.1)
    job.send_signal(signal.SIGTERM)
    output = job.communicate(timeout=120)[0]
    assert job.returncode == EXIT_PREEMPTED, output[-3000:]
    text = " ".join(output.split())
    assert "stopped by SIGTERM at " in text and f"hydra.run.dir={tmp_path}" in text  # mid-epoch or at its end
    saved = read_checkpoint(last, "preempted run")
    assert 0 < saved["step"] < 200 * 4 and not (tmp_path / "metrics.json").exists()
