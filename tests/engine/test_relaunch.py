"""A relaunch (same run directory, checkpoints/last.pt present) applies its overrides or refuses, in one message,
each one it cannot apply, by name, before anything is written: the run directory stays byte for byte as it was
(tb/, .hydra/ and the log included); what it applies, it records."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtlssl.engine.preemption import Preempted
from mtlssl.engine.relaunch import APPLICABLE, MISSING, changed_keys
from mtlssl.engine.state import read_checkpoint
from mtlssl.errors import UserError
from mtlssl.stages import pipeline, train_mtl
from tests.conftest import TINY, tiny
from tests.engine.test_preemption import signal_at_step
from tests.test_cli import own_outputs, run_cli

# 4 optimizer updates per epoch (64 images in batches of 16), 2 epochs; DWA carries state across epochs.
RUN = ["trainer.epochs=2", "trainer.batch_size=16", "weighting=dwa"]
CANNOT = "that this launch continues, and continuing it cannot apply"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished")
    train_mtl.run(tiny("train_mtl", *RUN), run_dir)
    return run_dir


def history(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "images_per_s"}
            for h in json.loads((run_dir / "metrics.json").read_text())["history"]]


def scores_of(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k.startswith("test/")}


# (overrides of the relaunch, phrases of its one message): what is trained, or how, never changes under way.
REFUSED = [
    (["optim.lr=0.01"], ["optim.lr: 0.002 in the run, 0.01 asked"]),  # last.pt's optimizer state would win
    (["weighting.temperature=4"], ["weighting.temperature: 2.0 in the run, 4 asked"]),
    (["seed=1"], ["seed: 0 in the run, 1 asked"]),
    (["trainer.batch_size=0"], ["trainer.batch_size: 16 in the run, 0 asked"]),  # a bad value, refused as a change
    (["trainer.epochs=3"], ["trainer.epochs: 2 in the run, 3 asked (with trainer.epochs=3 the learning-rate schedule "
                            "would give update", "but the run has taken 8 updates"]),
    (["trainer.epochs=1"], ["trainer.epochs: 2 in the run, 1 asked (it has already trained 2 epochs)"]),
    (["data.n_train=32"], ["data.n_train: 64 in the run, 32 asked"]),
    (["augmentation.flip_p=0.5"], ["augmentation.flip_p: 0.0 in the run, 0.5 asked"]),
    (["sched=constant"], ["sched._target_: mtlssl.engine.optim.cosine in the run, mtlssl.engine.optim.constant asked"]),
    (["precision=bf16"], ["precision: auto in the run, bf16 asked"]),
    (["trainer.monitor=val/shape/accuracy"], ["trainer.monitor: val/loss in the run, val/shape/accuracy asked"]),
    (["tasks=[shape]"], ["tasks: null in the run, [shape] asked"]),
    (["+weighting.extra=1"], ["weighting.extra: (not set) in the run, 1 asked"]),
    (["weighting=uncertainty"], ["weighting._target_: mtlssl.weighting.dwa.DWA in the run, "
                                 "mtlssl.weighting.uncertainty.Uncertainty asked"]),
    (["optim.lr=0.01", "seed=1", "trainer.log_every=5", "encoder.arch.width=8"],  # all in one message
     ["these settings: encoder.arch.width: 4 in the run, 8 asked; optim.lr: 0.002 in the run, 0.01 asked; seed: 0"]),
]


@pytest.mark.parametrize("overrides,phrases", REFUSED, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_relaunch_refuses_each_setting_it_cannot_apply_and_writes_nothing(
        overrides: list[str], phrases: list[str], finished: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    before = own_outputs(run_dir)
    with pytest.raises(UserError) as err:
        train_mtl.run(tiny("train_mtl", *RUN, *overrides), run_dir)
    message = str(err.value)
    for phrase in [CANNOT, *phrases, "hydra.run.dir=<new dir>"]:
        assert phrase in message, message
    assert "log_every" not in message  # how the job runs is applied, never refused
    assert own_outputs(run_dir) == before  # every file, tb/ included, byte for byte and untouched


def test_a_relaunch_applies_how_the_job_runs_and_records_it(tmp_path: Path, finished: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped mid-epoch 2, relaunched with other logging and checkpointing: the same training, the new settings
    used and recorded."""
    signal_at_step(monkeypatch, signal.SIGTERM, at=6)
    with pytest.raises(Preempted, match="stopped by SIGTERM"):
        train_mtl.run(tiny("train_mtl", *RUN), tmp_path)
    monkeypatch.undo()
    applied = ["trainer.log_every=2", "trainer.checkpoint_every_steps=1", "trainer.nonfinite=skip",
               "objective=val/loss", "data.cache_dir=" + str(tmp_path / "cache")]
    train_mtl.run(tiny("train_mtl", *RUN, *applied), tmp_path)
    assert history(tmp_path) == history(finished) and scores_of(tmp_path) == scores_of(finished)
    recorded = yaml.safe_load((tmp_path / "resolved_config.yaml").read_text())
    stored = read_checkpoint(tmp_path / "checkpoints" / "last.pt", "ckpt")["config"]
    for config in (recorded, stored):
        assert config["trainer"]["log_every"] == 2 and config["trainer"]["checkpoint_every_steps"] == 1
        assert config["trainer"]["nonfinite"] == "skip" and config["objective"] == "val/loss"
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    logged = [e.step for e in events.Scalars("train/loss")]
    assert logged == [1, 2, 3, 4, 5, 6, 8]  # every step until the stop (log_every=1), then every 2nd


def test_a_longer_budget_is_applied_where_the_run_is_the_one_it_would_have_been(tmp_path: Path) -> None:
    """A constant schedule does not depend on the budget: 1 epoch continued to 3 is exactly a 3-epoch run."""
    constant = ["sched=constant", "trainer.batch_size=16", "weighting=dwa"]
    train_mtl.run(tiny("train_mtl", *constant, "trainer.epochs=3"), tmp_path / "straight")
    train_mtl.run(tiny("train_mtl", *constant, "trainer.epochs=1"), tmp_path / "longer")
    train_mtl.run(tiny("train_mtl", *constant, "trainer.epochs=3"), tmp_path / "longer")
    assert history(tmp_path / "longer") == history(tmp_path / "straight")
    assert scores_of(tmp_path / "longer") == scores_of(tmp_path / "straight")
    assert yaml.safe_load((tmp_path / "longer" / "resolved_config.yaml").read_text())["trainer"]["epochs"] == 3


def test_a_pipeline_relaunch_checks_every_stage_before_writing(tmp_path: Path) -> None:
    cfg = ["scratch_baseline=false"]
    pipeline.run(tiny("pipeline", *cfg), tmp_path)
    before = own_outputs(tmp_path)
    for overrides, phrase in (
        (["train_mtl.optim.lr=0.01"], "the pipeline's train_mtl stage: run directory '{}/train_mtl' holds a run"),
        (["pretrain.ssl.temperature=0.2"], "the pipeline's pretrain stage: run directory '{}/pretrain' holds a run"),
        (["seed=3"], "the pipeline's pretrain stage: "),
        (["eval.batch_size=0", "train_mtl.trainer.log_every=0"], "eval.batch_size must be >= 1 (got 0); "),
    ):
        with pytest.raises(UserError) as err:
            pipeline.run(tiny("pipeline", *cfg, *overrides), tmp_path)
        assert phrase.format(tmp_path) in str(err.value)
        assert own_outputs(tmp_path) == before
        if overrides == ["seed=3"]:  # the seed of both training stages: one message names both
            assert "; the pipeline's train_mtl stage: " in str(err.value)
    assert "the pipeline's train_mtl stage: trainer.log_every must be >= 1 (got 0)" in str(err.value)


# --- from the command line: .hydra/ and the log are part of the run directory too -----------------------------


def test_cli_relaunches_refused_leave_the_run_directory_byte_for_byte(tmp_path: Path) -> None:
    launch = ["mtlssl", "train-mtl", *TINY, *RUN, "trainer.log_every=1", "hydra.run.dir=run"]
    first = run_cli(*launch, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "run"
    before = own_outputs(run_dir)
    hashed = {p.relative_to(run_dir).parts[0] for p, _, _ in before}
    assert {"tb", ".hydra", "checkpoints", "train_mtl.log", "resolved_config.yaml"} <= hashed
    for overrides, phrase in ((["optim.lr=0.01"], "optim.lr: 0.002 in the run, 0.01 asked"),
                              (["trainer.batch_size=0"], "trainer.batch_size: 16 in the run, 0 asked"),
                              (["optim.lr=abc"], "optim.lr=abc: optim.lr needs a number"),
                              (["trainer.log_every=0"], "trainer.log_every must be >= 1 (got 0)")):
        out = run_cli(*launch, *overrides, cwd=tmp_path)
        text = " ".join((out.stdout + out.stderr).split())
        assert out.returncode == 2 and text.count(phrase) == 1 and "Traceback" not in text, text[-3000:]
        assert own_outputs(run_dir) == before, overrides

    applied = run_cli(*launch, "trainer.log_every=2", cwd=tmp_path)  # applied, and recorded
    assert applied.returncode == 0, applied.stderr[-3000:]
    assert "trainer.log_every=2" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "trainer.log_every=2" not in (run_dir / ".hydra" / "previous" / "1" / "overrides.yaml").read_text()
    assert yaml.safe_load((run_dir / "resolved_config.yaml").read_text())["trainer"]["log_every"] == 2
    assert len(json.loads((run_dir / "provenance.json").read_text())["relaunches"]) == 1


# --- the comparison itself ---------------------------------------------------------------------------------------


def test_changed_keys_names_a_rebuilt_node_by_its_target_and_skips_what_is_applicable() -> None:
    stored = {"weighting": {"_target_": "a.Equal"}, "optim": {"lr": 0.1, "betas": [0.9, 0.99]}, "device": "cpu",
              "trainer": {"epochs": 2, "log_every": 1}}
    asked = {"weighting": {"_target_": "a.DWA", "temperature": 2.0}, "optim": {"lr": 0.1, "betas": [0.9, 0.999]},
             "device": "cuda", "trainer": {"epochs": 5, "log_every": 9}, "new": {"key": 1}}
    assert changed_keys(stored, asked, upgraded=False) == [
        ("new.key", MISSING, 1), ("optim.betas", [0.9, 0.99], [0.9, 0.999]),
        ("weighting._target_", "a.Equal", "a.DWA")]  # epochs are judged on their own (epochs_problem)
    assert changed_keys(stored, asked, upgraded=True)[0][0] == "optim.betas"  # format 1 predates new.key
    assert all(not key.startswith(("optim", "seed", "sched", "data.n", "weighting", "precision")) for key in APPLICABLE)


def test_a_new_budget_is_refused_where_the_checkpoint_cannot_tell_the_updates_per_epoch(
        finished: Path, tmp_path: Path) -> None:
    """Where last.pt cannot tell the updates per epoch (here: a count that does not divide), a new budget is
    refused rather than guessed."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["step"] = 7
    torch.save(ckpt, last)
    with pytest.raises(UserError, match="does not tell how many updates an epoch has"):
        train_mtl.run(tiny("train_mtl", *RUN[1:], "trainer.epochs=3"), run_dir)
