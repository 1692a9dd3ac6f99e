"""The Python API and export: a trained model from its run directory alone, predictions that score as the run
recorded, the README's code block as written, and safetensors exports (torchvision's keys for a ResNet)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file, save
from torch import nn

from mtlssl.api import ENCODER_FILE, MODEL_FILE, export, load
from mtlssl.data.build import build_data
from mtlssl.errors import UserError
from mtlssl.stages import pretrain, train_mtl
from tests.conftest import TINY_DATA, TINY_TRAIN, compose_config, tiny
from tests.test_cli import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def mtl_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("mtl")
    train_mtl.run(tiny("train_mtl", "precision=32"), run_dir)
    return run_dir


def test_loaded_model_predicts_what_the_run_scored(mtl_run: Path) -> None:
    model = load(mtl_run)
    assert [t.name for t in model.tasks] == ["shape", "colour", "size", "position", "outlined"]
    assert not model.model.training and model.info["kind"] == "mtl"
    test = build_data(tiny("train_mtl").data).split("test")
    predictions = model.predict(test.images)  # uint8 images, as the data holds them
    assert torch.allclose(predictions["shape"].sum(dim=1), torch.ones(len(test)), atol=1e-5)
    assert predictions["position"].shape == (len(test), 2) and predictions["outlined"].shape == (len(test), 1)
    recorded = json.loads((mtl_run / "metrics.json").read_text())
    accuracy = (predictions["shape"].argmax(dim=1) == test.targets["shape"]).float().mean().item()
    assert accuracy == pytest.approx(recorded["test/shape/accuracy"], abs=1e-6)
    mae = (predictions["size"] - test.targets["size"]).abs().mean().item()
    assert mae == pytest.approx(recorded["test/size/mae"], rel=1e-5)


def test_the_readme_code_block_runs_as_written(mtl_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    [block] = [b for b in blocks if "from mtlssl.api import load" in b]
    exec(compile(block.replace("outputs/train_mtl/<date>/<time>", str(mtl_run)), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'shape': torch.Size([4, 5])" in printed and "'position': torch.Size([4, 2])" in printed


def test_an_export_loads_back_with_the_same_predictions_and_is_never_overwritten(mtl_run: Path,
                                                                                 tmp_path: Path) -> None:
    files = export(mtl_run, tmp_path / "exported")
    assert [f.name for f in files] == [ENCODER_FILE, MODEL_FILE, "model.json"]
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    direct, exported = load(mtl_run).predict(images), load(tmp_path / "exported").predict(images)
    assert all(torch.equal(direct[k], exported[k]) for k in direct)
    with pytest.raises(UserError, match="already holds encoder.safetensors, model.safetensors, model.json"):
        export(mtl_run, tmp_path / "exported")
    out = run_cli("mtlssl", "export", str(mtl_run), "--out", str(tmp_path / "exported"), cwd=tmp_path)
    assert out.returncode == 2 and "choose a new --out directory" in out.stderr


def _nan_weights(where: Path) -> None:
    state = load_file(where / MODEL_FILE)
    state[next(k for k, v in state.items() if v.is_floating_point())][0] = math.nan
    (where / MODEL_FILE).write_bytes(save(state))


def _spec(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(where: Path) -> None:
        spec = json.loads((where / "model.json").read_text())
        change(spec)
        (where / "model.json").write_text(json.dumps(spec))
    return edit


@pytest.mark.parametrize("corrupt,message", [
    (_nan_weights, "weights hold NaN or infinite values"),
    (_spec(lambda s: s["model"]["backbone"].update(_target_="torch.hub.load")),
     "model.spec.backbone._target_=torch.hub.load is not allowed: encoder.arch may only name"),
    (_spec(lambda s: s.update(model=[1, 2])), "model.spec is a list, not a mapping"),
    (_spec(lambda s: s["model"].update(tasks="shape")), "model.spec.tasks is a string, not a list"),
    (lambda where: (where / "model.json").write_text("[1]"), "model.json is list, not a mapping"),
    (lambda where: (where / "model.json").write_text("{"), "cannot read the export"),
    (lambda where: (where / MODEL_FILE).write_bytes(b"garbage"), "cannot read the export"),
], ids=["nan_weights", "hostile_backbone", "spec_not_a_mapping", "tasks_not_a_list", "json_not_a_mapping",
        "json_truncated", "weights_not_safetensors"])
def test_a_damaged_or_crafted_export_is_refused_by_load(corrupt: Callable[[Path], None], message: str,
                                                        mtl_run: Path, tmp_path: Path) -> None:
    where = tmp_path / "exported"
    export(mtl_run, where)
    corrupt(where)
    with pytest.raises(UserError, match="export the checkpoint again") as err:
        load(where)
    assert message in str(err.value) and str(where) in str(err.value)


def test_a_resnet_encoder_exports_with_torchvision_names(tmp_path: Path) -> None:
    # An untrained ResNet-18 (pretrain with zero epochs saves the initial encoder): the names are what is tested.
    cfg = compose_config("pretrain", ["device=cpu", *TINY_DATA, *TINY_TRAIN, "encoder=resnet18", "trainer.epochs=0"])
    pretrain.run(cfg, tmp_path / "r")
    out = run_cli("mtlssl", "export", str(tmp_path / "r"), "--out", str(tmp_path / "exported"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    net.load_state_dict(load_file(tmp_path / "exported" / ENCODER_FILE), strict=True)
    model = load(tmp_path / "r")
    x = torch.rand(2, 3, 32, 32)
    backbone = model.model.backbone
    with torch.no_grad():
        assert torch.allclose(net.eval()((x - backbone.mean) / backbone.std), model.features(x), atol=1e-5)
