"""Checkpoints of format 1 (mtlssl before architecture v2) still work: for eval, for encoder.init and for resume,
at an epoch end and mid-epoch. The fixtures are tiny fp32 runs made by commit 9f232a8 (tests/fixtures/v1/make.sh);
each test compares with the numbers that the old code recorded for the same run.

The tolerance allows for another CPU's kernels (the fixtures were made on an AVX512 machine) and for the
streamed metrics, which sum in another order than format 1's whole-split ones (measured here: <= 6e-8).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mtlssl.engine.state import FORMAT_VERSION, check_same_model, read_checkpoint, rebuild_model
from mtlssl.errors import UserError
from mtlssl.stages import evaluate, train_mtl
from tests.conftest import tiny

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
AS_MADE = ("precision=32", "encoder.arch.stem_stride=1")  # format 1's small_cnn kept full resolution in block 1


def recorded(name: str) -> dict:
    path = FIXTURES / name if name.endswith(".json") else FIXTURES / name / "metrics.json"
    return json.loads(path.read_text())


def scores(metrics: dict, prefix: str) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(prefix)}


def same_run(new: dict, old: dict) -> None:
    """Two metrics.json of one run agree: the test scores, and every epoch of the history."""
    assert scores(new, "test/") == pytest.approx(scores(old, "test/"), rel=1e-4, abs=1e-6)
    assert len(new["history"]) == len(old["history"])
    for a, b in zip(new["history"], old["history"], strict=True):
        a, b = ({k: v for k, v in h.items() if k != "images_per_s"} for h in (a, b))
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)


def test_a_format_1_checkpoint_is_upgraded_with_the_same_weights_under_todays_names() -> None:
    old = torch.load(FIXTURES / "mtl" / "checkpoints" / "last.pt", weights_only=True)
    assert old["format_version"] == 1
    ckpt = read_checkpoint(FIXTURES / "mtl" / "checkpoints" / "last.pt", "ckpt")
    assert ckpt["format_version"] == FORMAT_VERSION and ckpt["upgraded_from"] == 1
    model = rebuild_model(ckpt)  # from the checkpoint alone: no config
    weights = model.state_dict()
    assert len(weights) == len(old["encoder"]["state"]) + len(old["heads"])
    # body.<3b + j>: block b's conv (j=0) and batch norm (j=1) in format 1
    assert torch.equal(weights["backbone.blocks.1.0.weight"], old["encoder"]["state"]["body.3.weight"])
    assert torch.equal(weights["backbone.blocks.2.1.running_mean"], old["encoder"]["state"]["body.7.running_mean"])
    assert torch.equal(weights["heads.shape.weight"], old["heads"]["shape.weight"])
    assert ckpt["extras"]["weighting"].keys() == old["weighting"].keys()
    assert ckpt["model"]["spec"]["backbone"]["_target_"] == "mtlssl.models.backbones.small_cnn.small_cnn"


def test_eval_of_a_format_1_checkpoint_reproduces_its_recorded_test_scores(tmp_path: Path) -> None:
    metrics = evaluate.run(tiny("eval", f"ckpt={FIXTURES / 'mtl'}", "precision=32"), tmp_path)
    assert scores(metrics, "test/") == pytest.approx(scores(recorded("mtl"), "test/"), rel=1e-5, abs=1e-6)
    probed = evaluate.run(tiny("eval", f"ckpt={FIXTURES / 'pretrain'}", "precision=32"), tmp_path / "probe")
    assert 0.0 <= probed["test/shape/linear_probe"] <= 1.0 and 0.0 <= probed["test/shape/knn"] <= 1.0


def test_encoder_init_from_a_format_1_pretrain_checkpoint_trains_as_it_did(tmp_path: Path) -> None:
    train_mtl.run(tiny("train_mtl", f"encoder.init={FIXTURES / 'pretrain'}", *AS_MADE), tmp_path)
    same_run(json.loads((tmp_path / "metrics.json").read_text()), recorded("mtl_from_pretrain.metrics.json"))


@pytest.mark.parametrize(("fixture", "where"), [("mtl", "an epoch end"), ("mtl_stopped", "mid-epoch 1")])
def test_resume_from_a_format_1_last_checkpoint_continues_as_it_would_have(fixture: str, where: str,
                                                                            tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / fixture, run_dir)
    epochs, expected = ("trainer.epochs=2", "mtl_2_epochs.metrics.json") if fixture == "mtl" else \
        ("trainer.epochs=1", "mtl/metrics.json")
    train_mtl.run(tiny("train_mtl", epochs, "weighting=uncertainty", *AS_MADE), run_dir)
    same_run(json.loads((run_dir / "metrics.json").read_text()), json.loads((FIXTURES / expected).read_text()))


def test_format_1_runs_refuse_todays_default_stride_by_name(tmp_path: Path) -> None:
    """The default small_cnn now halves the resolution in its first block; format 1's weights were trained at
    full resolution. The same weight shapes must not make that a silent change."""
    with pytest.raises(UserError, match="encoder mismatch: .*'stem_stride': 1.* 'stem_stride': 2"):
        train_mtl.run(tiny("train_mtl", f"encoder.init={FIXTURES / 'pretrain'}", "precision=32"), tmp_path / "init")
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "mtl", run_dir)
    with pytest.raises(UserError, match="cannot apply this setting: encoder.arch.stem_stride: 1 in the run, 2 asked"):
        train_mtl.run(tiny("train_mtl", "trainer.epochs=2", "weighting=uncertainty", "precision=32"), run_dir)
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.pt", "resume")
    strided = {**ckpt["model"]["spec"], "backbone": {**ckpt["model"]["spec"]["backbone"], "stem_stride": 2}}
    with pytest.raises(UserError, match="holds another model than this launch builds .*stem_stride"):
        check_same_model(ckpt, strided)  # TrainState.restore's own check, behind the relaunch's comparison
