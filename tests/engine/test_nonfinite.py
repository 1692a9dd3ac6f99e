"""Non-finite losses and gradients: caught per task; raise names the step, task and last good checkpoint;
skip drops the step and stops after too many; fp16 overflow the grad scaler handles is not a fault."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from mtlssl.engine.nonfinite import NonFiniteError, NonFiniteGuard, nonfinite_grads
from mtlssl.engine.state import read_checkpoint
from mtlssl.errors import UserError
from mtlssl.objectives import SupervisedTasks
from mtlssl.stages import train_mtl
from tests.conftest import tiny

TASKS = ["shape", "size"]
NOT_SAVED = Path("/nonexistent/last.pt")


def test_raise_names_the_task_the_step_and_the_last_good_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    guard = NonFiniteGuard("raise", 10, last_good=tmp_path / "last.pt")
    assert guard.losses_ok(torch.tensor([0.5, 1.0]), TASKS, epoch=0, step=0)
    with pytest.raises(NonFiniteError, match=r"task size \(nan\) at epoch 3, step 8; the last good checkpoint is "
                                             f"{tmp_path / 'last.pt'}"):
        guard.losses_ok(torch.tensor([0.5, math.nan]), TASKS, epoch=2, step=7)
    with pytest.raises(NonFiniteError, match="no checkpoint was saved yet"):
        NonFiniteGuard("raise", 10, tmp_path / "none.pt").losses_ok(torch.tensor([math.inf, 1.0]), TASKS, 0, 0)


def test_skip_counts_and_stops_after_max_skips() -> None:
    guard = NonFiniteGuard("skip", 2, last_good=NOT_SAVED)
    bad = torch.tensor([math.nan, 1.0])
    assert not guard.losses_ok(bad, TASKS, 0, 0) and not guard.losses_ok(bad, TASKS, 0, 1)
    assert guard.skipped == 2
    with pytest.raises(NonFiniteError, match=r"after 2 skipped steps \(trainer.max_nonfinite_skips=2\)"):
        guard.losses_ok(bad, TASKS, 0, 2)


def test_bad_policies_are_user_errors() -> None:
    with pytest.raises(UserError, match="trainer.nonfinite=ignore is not one of raise, skip"):
        NonFiniteGuard("ignore", 1, NOT_SAVED)
    with pytest.raises(UserError, match="max_nonfinite_skips must be >= 0"):
        NonFiniteGuard("skip", -1, NOT_SAVED)


def test_gradients_are_attributed_to_their_group() -> None:
    heads = {"head of shape": nn.Linear(2, 2), "head of size": nn.Linear(2, 1), "no grads": nn.Linear(1, 1)}
    for head in list(heads.values())[:2]:
        head(torch.ones(1, 2)).sum().backward()
    groups = {name: list(head.parameters()) for name, head in heads.items()}
    assert nonfinite_grads(groups) == []
    heads["head of size"].bias.grad[0] = math.inf
    assert nonfinite_grads(groups) == ["head of size"]


def poison(monkeypatch: pytest.MonkeyPatch, task: str, calls: set[int]) -> None:
    """Make ``task``'s loss NaN on the given forward passes (counted from 1)."""
    real, count = SupervisedTasks.losses, {"n": 0}

    def poisoned(self, model, prepared):  # noqa: ANN001, ANN202
        losses, output = real(self, model, prepared)
        count["n"] += 1
        if count["n"] in calls:
            losses = losses.clone()
            losses[self.names.index(task)] = math.nan
        return losses, output

    monkeypatch.setattr(SupervisedTasks, "losses", poisoned)


def test_training_raises_on_a_nan_loss_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poison(monkeypatch, "size", {3})  # epoch 2, first step (2 steps of 32 images per epoch)
    with pytest.raises(NonFiniteError, match=r"non-finite loss of task size \(nan\) at epoch 2, step 3; the last "
                                             r"good checkpoint is .*last.pt"):
        train_mtl.run(tiny("train_mtl", "trainer.epochs=2"), tmp_path)


def test_skip_policy_drops_the_step_and_training_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    poison(monkeypatch, "size", {1})
    train_mtl.run(tiny("train_mtl", "trainer.epochs=2", "trainer.nonfinite=skip"), tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [h.get("nonfinite_skips") for h in metrics["history"]] == [1, 1]
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt", "resume")["step"] == 2 * 2 - 1  # one step dropped
    assert all(math.isfinite(v) for k, v in metrics.items() if k.startswith("test/"))


@pytest.mark.parametrize("method", ["equal", "db_mtl"])  # DB-MTL keeps gradient EMAs that an overflow would poison
def test_fp16_overflow_handled_by_the_grad_scaler_is_not_a_fault(method: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scalers = []

    def huge_scale(device: torch.device, precision: str) -> torch.amp.GradScaler:
        scalers.append(torch.amp.GradScaler(device.type, init_scale=2.0**40, enabled=precision == "16"))
        return scalers[-1]

    monkeypatch.setattr(train_mtl, "grad_scaler", huge_scale)
    train_mtl.run(tiny("train_mtl", "precision=16", f"weighting={method}"), tmp_path)  # policy raise: a fault stops it
    assert scalers[0].get_scale() < 2.0**40  # it overflowed and the scaler backed off
    assert "nonfinite_skips" not in json.loads((tmp_path / "metrics.json").read_text())["history"][0]
    state = read_checkpoint(tmp_path / "checkpoints" / "last.pt", "resume")["extras"]["weighting"]
    assert all(torch.isfinite(v).all() for v in state.values() if isinstance(v, torch.Tensor))
