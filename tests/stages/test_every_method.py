"""A short train-mtl run with every weighting method on the default data (tiny), through the real stage."""

import math
from pathlib import Path

import pytest

from mtlssl.stages import train_mtl
from mtlssl.weighting import METHODS
from tests.conftest import tiny

EXTRA = {"static": ["weighting.weights=[1,1,1,1,1]"]}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_end_to_end(method: str, tmp_path: Path) -> None:
    results = train_mtl.run(tiny("train_mtl", f"weighting={method}", "trainer.epochs=2", *EXTRA.get(method, [])),
                            tmp_path)
    assert all(math.isfinite(v) for k, v in results.items() if k.startswith("test/") and "auroc" not in k)
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_the_trainer_drives_the_methods_hooks(tmp_path: Path) -> None:
    """DWA learns from epoch-end losses, FAMO from the post-step losses: their saved state shows both ran."""
    import torch

    train_mtl.run(tiny("train_mtl", "weighting=dwa", "trainer.epochs=3"), tmp_path / "dwa")
    dwa = torch.load(tmp_path / "dwa/checkpoints/last.pt", weights_only=True)["extras"]["weighting"]
    assert int(dwa["epochs_seen"]) == 3 and not torch.equal(dwa["weights"], torch.ones(5))
    train_mtl.run(tiny("train_mtl", "weighting=famo", "trainer.epochs=1"), tmp_path / "famo")
    famo = torch.load(tmp_path / "famo/checkpoints/last.pt", weights_only=True)["extras"]["weighting"]
    assert int(famo["adam_step"]) == 2 and famo["logits"].abs().sum() > 0  # 64 images / batch 32 = 2 steps


@pytest.mark.parametrize("method", ["dwa", "famo", "rlw", "pcgrad", "graddrop", "gradvac", "gradnorm", "db_mtl",
                                    "imtl"])
def test_stateful_and_random_methods_resume_exactly(method: str, tmp_path: Path) -> None:
    """2 epochs straight == 1 epoch, then resumed for 1 more. Epoch 1 is pure warm-up in both schedules
    (sched.warmup_epochs=1), so the 1-epoch run is exactly the first half of the 2-epoch one."""
    cfg = [f"weighting={method}", "sched.warmup_epochs=1"]
    straight = train_mtl.run(tiny("train_mtl", *cfg, "trainer.epochs=2"), tmp_path / "straight")
    train_mtl.run(tiny("train_mtl", *cfg, "trainer.epochs=1"), tmp_path / "split")
    resumed = train_mtl.run(tiny("train_mtl", *cfg, "trainer.epochs=2"), tmp_path / "split")
    assert resumed == straight


def test_gradient_accumulation_takes_one_update_per_k_batches(tmp_path: Path) -> None:
    import torch

    from mtlssl.errors import UserError

    train_mtl.run(tiny("train_mtl", "weighting=pcgrad", "trainer.batch_size=16", "trainer.accumulate_grad_batches=2"),
                  tmp_path / "acc")
    assert torch.load(tmp_path / "acc/checkpoints/last.pt", weights_only=True)["step"] == 2  # 4 batches / 2
    with pytest.raises(UserError, match="accumulate_grad_batches=8 exceeds the 4 batches"):
        train_mtl.run(tiny("train_mtl", "trainer.batch_size=16", "trainer.accumulate_grad_batches=8"), tmp_path / "x")
