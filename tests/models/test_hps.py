"""Hard parameter sharing behind the architecture contract: what is shared and what each task owns, outputs of
the named tasks only, a spec that rebuilds it, new tasks, and a frozen shared part."""

from __future__ import annotations

import pytest
import torch

from mtlssl.errors import UserError
from mtlssl.models.build import build_model
from mtlssl.tasks import TaskSpec

TASKS = [TaskSpec("a", "multiclass", 3), TaskSpec("b", "regression", 2)]
SPEC = {"arch": "hps", "backbone": {"_target_": "mtlssl.models.backbones.small_cnn.small_cnn", "width": 4, "depth": 2},
        "head": {"_target_": "mtlssl.models.heads.mlp.mlp", "_partial_": True, "hidden_dim": 8, "dropout": 0.0},
        "tasks": [t.as_dict() for t in TASKS]}


def test_shared_and_task_parameters_partition_the_model() -> None:
    model = build_model(SPEC)
    shared, own = model.shared_parameters(), {t.name: model.task_parameters(t.name) for t in TASKS}
    ids = [id(p) for p in shared] + [id(p) for params in own.values() for p in params]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each parameter in exactly one part
    out = model(torch.rand(2, 3, 8, 8))
    out.outputs["b"].sum().backward()
    assert all(p.grad is None for p in own["a"]) and all(p.grad is not None for p in own["b"])


def test_forward_gives_the_named_tasks_and_the_shared_features() -> None:
    model = build_model(SPEC).eval()
    x = torch.rand(2, 3, 8, 8)
    full, only_b, none = model(x), model(x, ["b"]), model(x, ())
    assert list(full.outputs) == ["a", "b"] and list(only_b.outputs) == ["b"] and none.outputs == {}
    assert full.outputs["a"].shape == (2, 3) and full.outputs["b"].shape == (2, 2)
    assert torch.equal(full.shared, model.backbone(x)) and torch.equal(only_b.outputs["b"], full.outputs["b"])


def test_the_spec_rebuilds_the_same_model_without_a_config() -> None:
    model = build_model(SPEC)
    twin = build_model(model.spec())
    twin.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 8, 8)
    model.eval(), twin.eval()
    assert model.spec() == SPEC and torch.equal(model(x).outputs["a"], twin(x).outputs["a"])


def test_new_tasks_get_new_heads_on_the_same_backbone() -> None:
    model = build_model(SPEC)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.add_tasks([TaskSpec("c", "binary", 1)])
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in before.items())
    assert model.task_names == ["a", "b", "c"] and model(torch.rand(2, 3, 8, 8)).outputs["c"].shape == (2, 1)
    assert model.spec()["tasks"][-1] == {"name": "c", "kind": "binary", "num_outputs": 1}
    with pytest.raises(UserError, match=r"tasks \['a'\] are already in the model"):
        model.add_tasks([TaskSpec("a", "binary", 1)])


def test_a_frozen_shared_part_keeps_its_weights_and_batch_norm_statistics_in_training() -> None:
    model = build_model(SPEC)
    model.freeze_shared()
    model.train()
    assert not model.backbone.training and model.heads.training
    assert not any(p.requires_grad for p in model.shared_parameters())
    stats = model.backbone.blocks[0][1].running_mean.clone()
    model(torch.rand(4, 3, 8, 8) * 5)
    assert torch.equal(model.backbone.blocks[0][1].running_mean, stats)


def test_resuming_with_other_heads_is_a_clear_error() -> None:
    state = build_model(SPEC).state_dict()
    other = build_model({**SPEC, "tasks": [TaskSpec("a", "multiclass", 4).as_dict(), TASKS[1].as_dict()]})
    with pytest.raises(UserError, match=r"task heads in the checkpoint do not fit this model .* use the tasks= and"):
        other.load_state_dict(state)
