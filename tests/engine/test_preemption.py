"""Preemption: a signal saves last.pt at the next step boundary and stops; the relaunch continues exactly."""

import json
import logging
import os
import signal
from pathlib import Path

import pytest
import torch

from mtlssl.engine import loop
from mtlssl.engine import preemption as pre
from mtlssl.engine.optim import apply_gradients
from mtlssl.engine.state import init_backbone, read_checkpoint
from mtlssl.models.build import build_model, model_spec
from mtlssl.stages import pretrain, train_mtl
from tests.conftest import tiny

# 4 optimizer steps per epoch (64 training images in batches of 16), 2 epochs.
SMALL_STEPS = ["trainer.epochs=2", "trainer.batch_size=16"]


def signal_at_step(monkeypatch: pytest.MonkeyPatch, signum: int, at: int) -> None:
    """Send ``signum`` to this process from inside the ``at``-th optimizer step, as a scheduler would."""
    calls = {"n": 0}

    def stepping(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signum)
        apply_gradients(*args, **kwargs)

    monkeypatch.setattr(loop, "apply_gradients", stepping)


def results(run_dir: Path) -> dict:
    """metrics.json without the measured speed, which no two runs share."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for record in metrics.get("history", []):
        record.pop("images_per_s", None)
    metrics.get("final", {}).pop("images_per_s", None)
    return metrics


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    train_mtl.run(tiny("train_mtl", *SMALL_STEPS, "weighting=dwa"), run_dir)
    return run_dir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signal_saves_mid_epoch_and_the_relaunch_matches_an_uninterrupted_run(
        signum: int, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny("train_mtl", *SMALL_STEPS, "weighting=dwa")  # DWA: weighting state carried across epochs
    signal_at_step(monkeypatch, signum, at=6)  # epoch 2, step 2 of 4
    with pytest.raises(pre.Preempted, match=f"stopped by {signal.Signals(signum).name} at epoch 2, step 6"):
        train_mtl.run(cfg, tmp_path)
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.pt", "resume", kinds=("mtl",))
    assert saved["epoch"] == 1 and saved["step"] == 6 and saved["train"]["position"]["batch"] == 2
    assert not (tmp_path / "metrics.json").exists()

    monkeypatch.undo()
    train_mtl.run(cfg, tmp_path)  # resume=auto: continues from the saved step
    assert results(tmp_path) == results(uninterrupted)


def test_pretrain_resumes_mid_epoch_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    cfg = tiny("pretrain", "trainer.epochs=2", "trainer.batch_size=16", "ssl.hidden_dim=16", "ssl.out_dim=8")
    pretrain.run(cfg, tmp_path / "reference")
    signal_at_step(monkeypatch, signal.SIGTERM, at=9)  # epoch 2, step 3 of 6
    with pytest.raises(pre.Preempted, match="at epoch 2, step 9"):
        pretrain.run(cfg, tmp_path / "resumed")
    with caplog.at_level(logging.WARNING):  # starting train-mtl from it now would be a half-trained encoder
        init_backbone(build_model(model_spec("hps", cfg.encoder.arch, None, [])), str(tmp_path / "resumed"))
    assert "is from an unfinished run (epoch 1 of 2, stopped mid-epoch)" in caplog.text
    monkeypatch.undo()
    pretrain.run(cfg, tmp_path / "resumed")
    assert results(tmp_path / "resumed") == results(tmp_path / "reference")
    weights = [read_checkpoint(tmp_path / d, "ckpt")["model"]["state"] for d in ("reference", "resumed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_crash_resumes_from_the_last_periodic_checkpoint(tmp_path: Path, uninterrupted: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny("train_mtl", *SMALL_STEPS, "weighting=dwa", "trainer.checkpoint_every_steps=3")
    calls = {"n": 0}

    def crashing(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 4:  # the last step of epoch 1; the periodic checkpoint of step 3 is the latest
            raise RuntimeError("the machine went away")
        apply_gradients(*args, **kwargs)

    monkeypatch.setattr(loop, "apply_gradients", crashing)
    with pytest.raises(RuntimeError, match="went away"):
        train_mtl.run(cfg, tmp_path)
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.pt", "resume", kinds=("mtl",))
    assert (saved["epoch"], saved["step"], saved["train"]["position"]["batch"]) == (0, 3, 3)  # mid-epoch 1
    monkeypatch.undo()
    train_mtl.run(cfg, tmp_path)
    assert results(tmp_path) == results(uninterrupted)


def test_the_guard_restores_the_previous_handlers_and_a_second_ctrl_c_stops_at_once() -> None:
    before = {s: signal.getsignal(s) for s in pre.SIGNALS}
    with pre.PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.requested and guard.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in pre.SIGNALS} == before


def test_a_displaced_python_handler_gets_the_signal_after_the_save(tmp_path: Path) -> None:
    """submitit's SIGUSR2 handler requeues the job: it must run, but only once last.pt is saved."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    try:
        with pre.PreemptionGuard() as guard:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert guard.requested and calls == []  # nothing handed on before the loop has saved
            with pytest.raises(pre.Preempted, match="stopped by SIGUSR2 at epoch 1, step 3"):
                guard.stop(tmp_path / "last.pt", "epoch 1, step 3")
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_periodic_save_schedule() -> None:
    assert [s for s in range(1, 10) if pre.periodic_save(3, True, s)] == [3, 6, 9]
    assert not pre.periodic_save(0, True, 3) and not pre.periodic_save(3, False, 3)


def test_an_epoch_stopped_midway_continues_only_under_the_same_batch_layout(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    signal_at_step(monkeypatch, signal.SIGTERM, at=2)
    with pytest.raises(pre.Preempted):
        train_mtl.run(tiny("train_mtl", *SMALL_STEPS), tmp_path)
    monkeypatch.undo()
    with pytest.raises(pre.UserError, match="cannot apply this setting: trainer.batch_size: 16 in the run, 32 asked"):
        train_mtl.run(tiny("train_mtl", "trainer.epochs=2", "trainer.batch_size=32"), tmp_path)
    position = read_checkpoint(tmp_path / "checkpoints" / "last.pt", "resume")["train"]["position"]
    with pytest.raises(pre.UserError, match="stopped mid-epoch with seed=0, trainer.batch_size=16, .* but this "
                                            "launch has seed=0, trainer.batch_size=32"):
        pre.check_layout(position, {**position["layout"], "trainer.batch_size": 32})  # the loop's own check


@pytest.mark.parametrize("overrides", [["weighting=famo"], ["weighting=rlw"], ["weighting=gradvac"],
                                       ["weighting=pcgrad", "trainer.accumulate_grad_batches=2"]],
                         ids=lambda o: " ".join(o))
def test_mid_epoch_resume_is_exact_for_stateful_and_random_methods(overrides: list[str], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny("train_mtl", *SMALL_STEPS, *overrides)
    train_mtl.run(cfg, tmp_path / "reference")
    signal_at_step(monkeypatch, signal.SIGTERM, at=3)
    with pytest.raises(pre.Preempted):
        train_mtl.run(cfg, tmp_path / "resumed")
    assert read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt", "resume")["train"]["position"] is not None
    monkeypatch.undo()
    train_mtl.run(cfg, tmp_path / "resumed")
    assert results(tmp_path / "resumed") == results(tmp_path / "reference")
