from __future__ import annotations

import copy
import math
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from mtlssl.config import to_plain
from mtlssl.engine.state import FORMAT_VERSION, read_checkpoint, rebuild_model, write_checkpoint
from mtlssl.errors import UserError
from mtlssl.io import resolve_checkpoint
from mtlssl.models.build import build_model, model_spec
from mtlssl.tasks import TaskSpec
from tests.conftest import tiny


def valid_checkpoint(kind: str = "mtl", **fields: Any) -> dict[str, Any]:
    """The smallest checkpoint every use accepts: a tiny real model with one task (none for pretrain), every
    field of format 2 (``train`` only when given)."""
    cfg = tiny("train_mtl")
    tasks = [TaskSpec("shape", "multiclass", 5)] if kind == "mtl" else []  # shapes' shape task
    model = build_model(model_spec("hps", cfg.encoder.arch, cfg.heads if tasks else None, tasks))
    return {"format_version": FORMAT_VERSION, "kind": kind, "config": {"encoder": {"name": "small_cnn"}},
            "model": {"spec": model.spec(), "state": model.state_dict()}, "tasks": [t.as_dict() for t in tasks],
            "extras": {}, "epoch": 0, "step": 0, "metrics": {}, "lineage": [], **fields}


def test_round_trip_and_run_directory_resolution(tmp_path: Path) -> None:
    write_checkpoint(valid_checkpoint(epoch=3, metrics={"w": 1.5}), tmp_path / "checkpoints" / "last.pt")
    ckpt = read_checkpoint(tmp_path, "ckpt")
    assert ckpt["epoch"] == 3 and ckpt["metrics"] == {"w": 1.5} and ckpt["format_version"] == 2
    write_checkpoint(valid_checkpoint(epoch=2), tmp_path / "checkpoints" / "best.pt")
    assert resolve_checkpoint(tmp_path, "ckpt").name == "best.pt"  # a run directory means its best.pt first
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary files left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    write_checkpoint(valid_checkpoint(epoch=1), path)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(UserError, match=r"cannot write .*last.pt \(No space left on device\); the previous one is "
                                        "unchanged"):
        write_checkpoint(valid_checkpoint(epoch=2), path)
    assert read_checkpoint(path, "ckpt")["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_truncated_foreign_and_missing_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    write_checkpoint(valid_checkpoint("pretrain"), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(UserError, match="cannot read checkpoint .* truncated"):
        read_checkpoint(truncated, "ckpt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not an mtlssl checkpoint"):
        read_checkpoint(foreign, "ckpt")
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "nope.pt", "ckpt")
    with pytest.raises(UserError, match="holds no checkpoints"):
        read_checkpoint(tmp_path, "ckpt")
    with pytest.raises(UserError, match="is a pretrain checkpoint, but a mtl checkpoint is needed"):
        read_checkpoint(good, "resume", kinds=("mtl",))


class Payload:
    def __reduce__(self):  # runs os.system on unpickling, if the loader allowed arbitrary code
        return (os.system, ("touch pwned",))


def test_a_checkpoint_carrying_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"kind": "mtl", "x": Payload()}, f, protocol=2)  # torch.save's protocol
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(UserError, match="cannot read checkpoint"):
            read_checkpoint(path, "ckpt")
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


# --- a checkpoint's structure and weights are checked when it is read (format 2, and format 1 once upgraded) ----

FULL = {"train": {"optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {}, "position": None, "history": [],
                  "best": None, "nonfinite_skips": 0, "grad_sums": {}}}


def first_weight(ckpt: dict[str, Any]) -> str:
    return next(k for k, v in ckpt["model"]["state"].items() if v.is_floating_point())


def poison(value: float) -> Any:
    def change(ckpt: dict[str, Any]) -> None:
        ckpt["model"]["state"][first_weight(ckpt)].view(-1)[0] = value
    return change


def drop(*keys: str) -> Any:
    def change(ckpt: dict[str, Any]) -> None:
        node = ckpt
        for key in keys[:-1]:
            node = node[key]
        del node[keys[-1]]
    return change


def put(value: Any, *keys: str | int) -> Any:
    def change(ckpt: dict[str, Any]) -> None:
        node = ckpt
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return change


def only(fields: dict[str, Any]) -> Any:
    def change(ckpt: dict[str, Any]) -> None:
        ckpt.clear()
        ckpt.update(fields)
    return change


# (case, how the file differs from a valid one, what the message says)
MALFORMED = [
    ("only_a_kind", only({"kind": "mtl"}), "encoder is missing (a checkpoint of format 1)"),
    ("format_2_only_a_kind", only({"format_version": 2, "kind": "mtl"}), "config is missing"),
    ("no_model", drop("model"), "model is missing"),
    ("no_weights", drop("model", "state"), "model.state is missing"),
    ("state_not_a_mapping", put([1.0, 2.0], "model", "state"), "model.state is a list, not a mapping"),
    ("spec_not_a_mapping", put("hps", "model", "spec"), "model.spec is a string, not a mapping"),
    ("tasks_not_a_list", put("shape", "tasks"), "tasks is a string, not a list"),
    ("spec_tasks_not_a_list", put({"shape": 5}, "model", "spec", "tasks"), "model.spec.tasks is a mapping, not a list"),
    ("epoch_a_string", put("3", "epoch"), "epoch is a string, not an integer"),
    ("format_version_a_string", put("2", "format_version"), "format_version is a string, not an integer"),
    ("extras_not_states", put({"weighting": [1]}, "extras"), "extras.weighting is a list, not a mapping"),
    ("a_weight_not_a_tensor", lambda c: put([0.0], "model", "state", first_weight(c))(c), "not a dense tensor"),
    ("nan_weights", poison(math.nan), "weights hold NaN or infinite values"),
    ("inf_weights", poison(math.inf), "weights hold NaN or infinite values"),
    ("minus_inf_weights", poison(-math.inf), "the run that wrote it diverged"),
    ("unknown_architecture", put("mtan", "model", "spec", "arch"), "model.spec.arch=mtan is not an architecture"),
    ("unknown_task_kind", put({"name": "shape", "kind": "ordinal", "num_outputs": 5}, "model", "spec", "tasks", 0),
     "model.spec.tasks[0]="),
    ("a_task_spec_with_another_field", put({"name": "s", "kind": "binary", "num_outputs": 1, "x": 1}, "model", "spec",
                                           "tasks", 0), "is not a task spec"),
    ("tasks_without_a_head", put(None, "model", "spec", "head"), "model.spec has tasks but no head"),
    ("a_backbone_naming_other_code", put("torch.save", "model", "spec", "backbone", "_target_"),
     "model.spec.backbone._target_=torch.save is not allowed: encoder.arch may only name"),
    ("a_head_naming_other_code", put("torch.hub.load", "model", "spec", "head", "_target_"),
     "model.spec.head._target_=torch.hub.load is not allowed: heads may only name"),
    ("train_not_a_mapping", put([], "train"), "train is a list, not a mapping"),
    ("train_without_history", drop("train", "history"), "train.history is missing"),
    ("history_of_numbers", put([1, 2], "train", "history"), "train.history holds an entry that is not a mapping"),
    ("position_without_its_batch", put({"layout": {}, "loss_sum": torch.zeros(1), "counted": 0, "generators": {}},
                                       "train", "position"), "train.position.batch is missing"),
    ("best_without_its_epoch", put({"value": 0.5}, "train", "best"), "train.best.epoch is missing"),
    ("format_1_weights_not_a_mapping", only({"kind": "pretrain", "encoder": {"arch": {}, "state": []}, "ssl": {}}),
     "encoder.state is a list, not a mapping (a checkpoint of format 1)"),
    ("format_1_without_its_weighting", only({"kind": "mtl", "encoder": {"arch": {}, "state": {}}}),
     "weighting is missing (a checkpoint of format 1)"),
]


@pytest.fixture(scope="module")
def valid() -> dict[str, Any]:
    return valid_checkpoint(**FULL)


def malformed(valid: dict[str, Any], change: Any, path: Path) -> Path:
    ckpt = copy.deepcopy(valid)
    change(ckpt)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("change,message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_checkpoint_is_one_error_naming_the_file_and_the_field(change: Any, message: str,
                                                                        valid: dict[str, Any], tmp_path: Path) -> None:
    path = malformed(valid, change, tmp_path / "bad.pt")
    with pytest.raises(UserError) as err:
        read_checkpoint(path, "ckpt")
    assert f"ckpt: '{path}' is not a usable mtlssl checkpoint: " in str(err.value)
    assert message in str(err.value) and "point ckpt at an intact mtlssl checkpoint" in str(err.value)


def test_the_valid_checkpoint_of_these_tests_is_read_and_rebuilt(valid: dict[str, Any], tmp_path: Path) -> None:
    path = malformed(valid, lambda c: None, tmp_path / "good.pt")
    model = rebuild_model(read_checkpoint(path, "ckpt", full=True))
    assert model.task_names == ["shape"]


def test_resuming_needs_the_train_states(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    write_checkpoint(valid_checkpoint(), path)  # a best.pt: no train
    assert read_checkpoint(path, "ckpt")["epoch"] == 0
    with pytest.raises(UserError, match=r"resume: .* train \(what resuming needs\) is missing.*move checkpoints/last"):
        read_checkpoint(path, "resume", full=True)


def test_weights_that_do_not_fit_their_own_spec_are_named(valid: dict[str, Any], tmp_path: Path) -> None:
    path = malformed(valid, put(torch.zeros(2), "model", "state", "heads.extra.weight"), tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"bad.pt' is not a usable mtlssl checkpoint: its weights do not fit its own "
                                        r"model spec \(unexpected heads.extra.weight\)"):
        rebuild_model(read_checkpoint(path, "ckpt"))


# Every use of a checkpoint refuses these with the message above, before it writes anything.
USES = ["eval", "encoder.init", "resume", "api.load"]
SHAPES = ["only_a_kind", "state_not_a_mapping", "spec_not_a_mapping", "tasks_not_a_list", "nan_weights",
          "inf_weights", "a_backbone_naming_other_code"]


def use(how: str, path: Path, run_dir: Path) -> None:
    from mtlssl.api import load
    from mtlssl.stages import evaluate, train_mtl

    if how == "eval":
        evaluate.run(tiny("eval", f"ckpt={path}"), run_dir)
    elif how == "encoder.init":
        train_mtl.run(tiny("train_mtl", f"encoder.init={path}", "tasks=[shape]"), run_dir)
    elif how == "resume":
        train_mtl.run(tiny("train_mtl", "tasks=[shape]"), path.parents[1])
    else:
        load(path)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("how", USES)
def test_every_use_refuses_a_malformed_checkpoint_before_writing(how: str, shape: str, valid: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    change, message = next(m[1:] for m in MALFORMED if m[0] == shape)
    path = malformed(valid, change, tmp_path / "run" / "checkpoints" / "last.pt")
    what = {"eval": "ckpt", "api.load": "path"}.get(how, how)
    with pytest.raises(UserError) as err:
        use(how, path, tmp_path / "new")
    assert f"{what}: '{path}' is not a usable mtlssl checkpoint: " in str(err.value) and message in str(err.value)
    assert not (tmp_path / "new").exists() and [p.name for p in (tmp_path / "run").rglob("*")] == ["checkpoints",
                                                                                                    "last.pt"]


def test_a_train_state_that_does_not_load_is_named_on_resume(valid: dict[str, Any], tmp_path: Path) -> None:
    from mtlssl.stages import train_mtl

    cfg = tiny("train_mtl", "tasks=[shape]")
    valid = {**valid, "config": to_plain(cfg)}  # the launch's own config: the relaunch check lets it through
    path = malformed(valid, lambda c: None, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match=r"resume: '.*last.pt' holds no weighting state \(extras.weighting\)"):
        train_mtl.run(cfg, tmp_path)
    malformed(valid, put({}, "extras", "weighting"), path)  # equal weighting's state; train.optimizer is {}
    with pytest.raises(UserError, match=r"resume: train.optimizer in '.*last.pt' does not load into this run "
                                        r"\(KeyError: 'param_groups'\); move checkpoints/last.pt aside"):
        train_mtl.run(cfg, tmp_path)
