"""eval of a checkpoint whose stored config is hostile or malformed: refused with exit 2, and no code of the file
ever runs (the data config a checkpoint stores is built only from the registered data builders)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from mtlssl.errors import UserError
from mtlssl.stages import evaluate
from tests.conftest import tiny
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def stored(pretrained_run: Path) -> dict[str, Any]:
    """A real pretrain checkpoint, read raw, as a file's contents an attacker can rewrite and save again."""
    return torch.load(pretrained_run / "checkpoints" / "last.pt", weights_only=True)


def with_data(ckpt: dict[str, Any], data: Any, path: Path) -> Path:
    crafted = copy.deepcopy(ckpt)
    crafted["config"]["data"] = data
    torch.save(crafted, path)  # loads with weights_only=True: plain data and tensors only
    return path


def payload(marker: Path) -> dict[str, Any]:
    return {"_target_": "torch.save", "_args_": [[1], str(marker)]}


def test_eval_refuses_a_hostile_stored_data_target_with_exit_2_and_never_runs_it(stored: dict[str, Any],
                                                                                  tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = with_data(stored, payload(marker), tmp_path / "evil.pt")
    out = run_cli("mtlssl", "eval", f"ckpt={evil}", "device=cpu", "hydra.run.dir=scored", cwd=tmp_path)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2, text[-2000:]
    assert (f"data._target_=torch.save is not allowed (in the config stored in '{evil}'): data may only name "
            "mtlssl.data.celeba.celeba,") in text and "Traceback" not in text
    assert not marker.exists()
    assert not (tmp_path / "scored" / "metrics.json").exists()


@pytest.mark.parametrize("data,message", [
    ({"_target_": "torch.hub.load", "repo_or_dir": "x/y", "model": "m"}, "data._target_=torch.hub.load is not allowed"),
    ({"_target_": "mtlssl.data.shapes.shapes", "extra": "PAYLOAD"}, "data.extra._target_=torch.save is not allowed"),
    ({"_target_": "mtlssl.data.shapes.shapes", "_args_": ["PAYLOAD"]}, "data._args_[0]._target_=torch.save"),
    ({"_target_": "${oc.env:MTLSSL_TEST_TARGET}", "_args_": [[1], "MARKER"]}, "data._target_=torch.save is not"),
    ({"_target_": "mtlssl.data.shapes.shapes", "extra": "${oc.decode:${oc.env:MTLSSL_TEST_NODE}}"},
     "data.extra._target_=torch.save is not allowed"),
    ({"_target_": "mtlssl.ssl.simclr.SimCLR", "in_dim": 4}, "data._target_=mtlssl.ssl.simclr.SimCLR is not allowed"),
    ("shapes", "stores no data config"),
    (None, "stores no data config"),
], ids=["torch.hub.load", "nested", "args", "env_target", "decoded_node", "another_groups_builder", "not_a_mapping",
        "none"])
def test_eval_refuses_every_shape_of_a_stored_data_config_naming_other_code(
        data: Any, message: str, stored: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MTLSSL_TEST_TARGET", "torch.save")
    monkeypatch.setenv("MTLSSL_TEST_NODE", f"{{_target_: torch.save, _args_: [[1], '{marker}']}}")

    def filled(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: filled(v) for k, v in node.items()}
        if isinstance(node, list):
            return [filled(v) for v in node]
        return payload(marker) if node == "PAYLOAD" else str(marker) if node == "MARKER" else node

    evil = with_data(stored, filled(data), tmp_path / "evil.pt")
    with pytest.raises(UserError) as err:
        evaluate.run(tiny("eval", f"ckpt={evil}"), tmp_path / "scored")
    assert message in str(err.value) and str(evil) in str(err.value)
    assert not marker.exists() and not (tmp_path / "scored").exists()


def test_a_data_override_is_used_instead_of_a_hostile_stored_one(stored: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = with_data(stored, payload(marker), tmp_path / "evil.pt")
    metrics = evaluate.run(tiny("eval", f"ckpt={evil}", "data=shapes", "data.n_unlabeled=96", "data.n_train=64",
                                "data.n_val=48", "data.n_test=48", "data.size=16", "data.cache_dir=null"),
                           tmp_path / "scored")
    assert "test/shape/knn" in metrics and not marker.exists()


def test_eval_of_a_file_holding_only_a_kind_exits_2_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save({"kind": "mtl"}, bad)
    out = run_cli("mtlssl", "eval", f"ckpt={bad}", "device=cpu", "hydra.run.dir=scored", cwd=tmp_path)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode == 2 and "Traceback" not in text and "KeyError" not in text
    assert f"ckpt: '{bad}' is not a usable mtlssl checkpoint: encoder is missing" in text
