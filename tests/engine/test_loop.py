"""The one loop with two streams per step (a labelled batch for the tasks and an unlabelled one for an SSL
objective, as joint training will use it): the second stream cycles in seeded orders, and a run stopped
mid-epoch resumes exactly."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import torch

from mtlssl.augment import BatchAugment
from mtlssl.data.image_set import ImageSet
from mtlssl.engine import loop
from mtlssl.engine.optim import apply_gradients, build_optimizer, param_groups
from mtlssl.engine.preemption import Preempted
from mtlssl.engine.run_dir import RunDir
from mtlssl.engine.runtime import Runtime, grad_scaler
from mtlssl.engine.state import TrainState, read_checkpoint
from mtlssl.models.build import build_model
from mtlssl.objectives import SelfSupervised, SupervisedTasks
from mtlssl.ssl import SimCLR
from mtlssl.tasks import TaskSpec, build_tasks
from mtlssl.weighting.equal import Equal
from tests.conftest import compose_config

TASKS = [TaskSpec("a", "multiclass", 3), TaskSpec("b", "regression", 1)]


def image_set(n: int, seed: int, labelled: bool) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    targets = {"a": torch.randint(0, 3, (n,), generator=g), "b": torch.rand(n, 1, generator=g)} if labelled else {}
    return ImageSet(images, targets)


def test_a_cycling_stream_covers_its_data_once_per_pass_and_skips_exactly() -> None:
    data = image_set(12, 0, labelled=False)
    data.images[:, 0, 0, 0] = torch.arange(12, dtype=torch.uint8)  # each image's id in a pixel
    stream = loop.Stream("unlabeled", data, batch_size=4)
    ids = [b[0][:, 0, 0, 0].tolist() for b, _ in zip(stream.batches(seed=1, epoch=0, skip=0, cycle=True),
                                                      range(7), strict=False)]
    assert sorted(sum(ids[:3], [])) == list(range(12)) and sorted(sum(ids[3:6], [])) == list(range(12))
    assert sum(ids[:3], []) != sum(ids[3:6], [])  # each pass in a new order
    resumed = [b[0][:, 0, 0, 0].tolist() for b, _ in zip(stream.batches(seed=1, epoch=0, skip=4, cycle=True),
                                                         range(3), strict=False)]
    assert resumed == ids[4:7]  # skipping 4 batches (into the second pass) replays the same batches
    other_epoch = next(stream.batches(seed=1, epoch=1, skip=0, cycle=True))[0][:, 0, 0, 0].tolist()
    assert other_epoch != ids[0]


def joint_fit(run_dir: Path, epochs: int = 2) -> TrainState:
    """Tasks a, b on 32 labelled images (batches of 8: 4 steps) and SimCLR on 24 unlabelled ones (batches of 8:
    3 per pass, so it cycles), one loss vector of three rows, equal weights."""
    torch.manual_seed(0)
    rt = Runtime.create("cpu", "32", channels_last=False)
    spec = {"arch": "hps", "backbone": {"_target_": "mtlssl.models.backbones.small_cnn.small_cnn", "width": 4,
                                        "depth": 2},
            "head": {"_target_": "mtlssl.models.heads.linear.linear", "_partial_": True},
            "tasks": [t.as_dict() for t in TASKS]}
    model, tasks = build_model(spec), build_tasks(TASKS)
    method = SimCLR(in_dim=model.backbone.out_dim, hidden_dim=8, out_dim=4)
    streams = [loop.Stream("train", image_set(32, 1, labelled=True), 8),
               loop.Stream("unlabeled", image_set(24, 2, labelled=False), 8, shuffle_id=11, augment_id=12)]
    objectives = [SupervisedTasks(tasks, BatchAugment(crop_scale=None, flip_p=0.5, jitter_p=0.0, grayscale_p=0.0),
                                  rt.device, rt.memory_format),
                  SelfSupervised(method, BatchAugment(), rt.device, rt.memory_format)]
    step = loop.Step(objectives, Equal(3))
    optimizer = build_optimizer(compose_config("train_mtl").optim,
                                param_groups([([*model.parameters(), *method.parameters()], 1.0)], 1e-2, 0.0))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = TrainState("mtl", {"trainer": {"epochs": epochs}}, model, {"ssl": method}, optimizer, scheduler,
                       grad_scaler(rt.device, rt.precision), best={"epoch": 0, "value": math.nan})
    out = RunDir(run_dir)
    resume = out.resume_state("auto", "mtl")
    if resume is not None:
        state.restore(resume)

    def evaluate(epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        return {f"train/{k}/epoch_loss": v for k, v in train_losses.items()}

    config = loop.LoopConfig(seed=0, epochs=epochs, log_every=1, monitor="train/ssl/epoch_loss")
    loop.fit(state, streams, step, evaluate, config, out, rt, final=dict)
    return state


def without_speed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "images_per_s"} for h in history]


def test_two_streams_per_step_train_every_row(tmp_path: Path) -> None:
    untrained = joint_fit(tmp_path / "untrained", epochs=0).extras["ssl"].state_dict()
    state = joint_fit(tmp_path)
    assert state.step == 8 and [h["epoch"] for h in state.history] == [1, 2]
    assert all(math.isfinite(state.history[-1][f"train/{n}/epoch_loss"]) for n in ("a", "b", "ssl"))
    trained = state.extras["ssl"].state_dict()
    assert not torch.equal(trained["projector.0.weight"], untrained["projector.0.weight"])  # the SSL row trained
    saved = read_checkpoint(tmp_path / "checkpoints" / "last.pt", "ckpt")
    assert saved["train"]["history"] == state.history and saved["extras"]["ssl"].keys() == trained.keys()


def test_two_streams_resume_mid_epoch_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = joint_fit(tmp_path / "reference")
    calls = {"n": 0}

    def stepping(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, step 2 of 4: the unlabelled stream is in its second pass
            os.kill(os.getpid(), signal.SIGTERM)
        apply_gradients(*args, **kwargs)

    monkeypatch.setattr(loop, "apply_gradients", stepping)
    with pytest.raises(Preempted, match="at epoch 2, step 6"):
        joint_fit(tmp_path / "resumed")
    assert read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt", "ckpt")["train"]["position"]["batch"] == 2
    monkeypatch.undo()
    resumed = joint_fit(tmp_path / "resumed")
    assert without_speed(resumed.history) == without_speed(reference.history)
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
