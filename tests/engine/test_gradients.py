import pytest
import torch
from torch import Tensor

from mtlssl.engine.backward import GradientOptions, backward
from mtlssl.engine.gradients import cosine_heatmap, gradient_stats, jacobian
from mtlssl.errors import UserError
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.models.build import build_model
from mtlssl.tasks import TaskSpec, build_tasks
from mtlssl.weighting.base import GradientWeighting, Weighting
from mtlssl.weighting.equal import Equal

TASKS = [TaskSpec("a", "regression", 1), TaskSpec("b", "regression", 2), TaskSpec("c", "multiclass", 3)]
SPEC = {"arch": "hps", "backbone": {"_target_": "mtlssl.models.backbones.small_cnn.small_cnn", "width": 2, "depth": 2},
        "head": {"_target_": "mtlssl.models.heads.linear.linear", "_partial_": True},
        "tasks": [t.as_dict() for t in TASKS]}


class Mean(GradientWeighting):
    """A reference gradient method: the mean of the task gradients; remembers what it was given."""

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self.seen = (jacobian.clone(), losses.clone())
        return jacobian.mean(dim=0)


def setup(seed: int = 0) -> tuple[MultiTaskArchitecture, torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    model = build_model(SPEC)
    x = torch.rand(6, 3, 8, 8)
    targets = {"a": torch.randn(6, 1), "b": torch.randn(6, 2), "c": torch.randint(0, 3, (6,))}
    return model, x, targets


def forward(model: MultiTaskArchitecture, x: Tensor, targets: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    output = model(x)
    return output.shared, torch.stack([t.loss(output.outputs[t.name], targets[t.name]) for t in build_tasks(TASKS)])


def mtl_backward(model: MultiTaskArchitecture, features: Tensor, losses: Tensor, method: Weighting,
                 options: GradientOptions, scaler: torch.amp.GradScaler | None = None,
                 **kwargs: object) -> Tensor | None:
    """The engine's backward over the model's contract: its shared parameters and each task's own."""
    own = [model.task_parameters(t.name) for t in TASKS]
    return backward(losses, model.shared_parameters(), own, method, options, features, scaler, **kwargs)


def per_task_gradients(model: MultiTaskArchitecture, x: Tensor, targets: dict[str, Tensor]) -> list[list[Tensor]]:
    grads = []
    for i in range(len(TASKS)):
        model.zero_grad()
        forward(model, x, targets)[1][i].backward()
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
    return grads


@pytest.mark.parametrize("mode", ["loop", "vmap"])
def test_jacobian_rows_are_the_exact_task_gradients(mode: str) -> None:
    model, x, targets = setup()
    reference = per_task_gradients(model, x, targets)
    names = [n for n, _ in model.named_parameters()]
    shared = [i for i, n in enumerate(names) if n.startswith("backbone.")]
    _, losses = forward(model, x, targets)
    jac = jacobian(losses, [p for n, p in model.named_parameters() if n.startswith("backbone.")], mode, chunk=2)
    for t in range(len(TASKS)):
        expected = torch.cat([reference[t][i].reshape(-1) for i in shared])
        assert torch.allclose(jac[t], expected, atol=1e-6)


def test_gradient_method_sets_the_direction_on_the_encoder_and_own_task_gradients_on_heads() -> None:
    model, x, targets = setup()
    reference = per_task_gradients(model, x, targets)
    model.zero_grad()
    features, losses = forward(model, x, targets)
    method = Mean(len(TASKS))
    mtl_backward(model, features, losses, method, GradientOptions())
    for i, (name, p) in enumerate(model.named_parameters()):
        if name.startswith("backbone."):
            expected = sum(reference[t][i] for t in range(len(TASKS))) / len(TASKS)
        else:  # a head's parameters: only its own task's gradient, unweighted
            task = name.split(".")[1]
            expected = reference[[t.name for t in TASKS].index(task)][i]
        assert torch.allclose(p.grad, expected, atol=1e-6), name
    assert torch.allclose(method.seen[1], losses.detach())


class WeightedHeads(Mean):
    """Mean for the encoder; each head's gradient weighted, as IMTL or Nash-MTL weight theirs."""

    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        self._set_task_specific_weights(torch.tensor([2.0, 0.5, 3.0]), losses)
        return super().aggregate(jacobian, losses)


def test_each_head_gets_its_task_gradient_times_the_methods_task_specific_weight() -> None:
    model, x, targets = setup()
    reference = per_task_gradients(model, x, targets)
    model.zero_grad()
    features, losses = forward(model, x, targets)
    mtl_backward(model, features, losses, WeightedHeads(len(TASKS)), GradientOptions())
    for i, (name, p) in enumerate(model.named_parameters()):
        if name.startswith("heads."):
            t = [t.name for t in TASKS].index(name.split(".")[1])
            assert torch.allclose(p.grad, (2.0, 0.5, 3.0)[t] * reference[t][i], atol=1e-6), name


def test_features_mode_aggregates_feature_gradients_then_backpropagates_once() -> None:
    model, x, targets = setup()
    features, losses = forward(model, x, targets)
    feature_jac = jacobian(losses, [features])  # [T, B * D]
    direction = feature_jac.mean(dim=0).view_as(features)
    expected = torch.autograd.grad(features, model.shared_parameters(), grad_outputs=direction,
                                   retain_graph=True)
    model.zero_grad()
    mtl_backward(model, features, losses, Mean(len(TASKS)), GradientOptions(grad_space="features"))
    for p, g in zip(model.shared_parameters(), expected, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_scaled_losses_give_scaled_gradients_and_an_unscaled_jacobian() -> None:
    """The fp16 path: the method sees true gradients; .grad holds them times the scale (unscaled later)."""
    model, x, targets = setup()
    features, losses = forward(model, x, targets)
    method = Mean(len(TASKS))
    mtl_backward(model, features, losses, method, GradientOptions())
    plain_jac, plain_grads = method.seen[0], [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    features, losses = forward(model, x, targets)
    mtl_backward(model, features, losses, method, GradientOptions(),
                 torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True))
    assert torch.allclose(method.seen[0], plain_jac, atol=1e-6)
    for p, g in zip(model.parameters(), plain_grads, strict=True):
        assert torch.allclose(p.grad, 1024.0 * g, rtol=1e-5, atol=1e-5)


def test_loss_level_method_is_one_backward_and_can_still_report_the_jacobian() -> None:
    model, x, targets = setup()
    features, losses = forward(model, x, targets)
    losses.sum().backward(retain_graph=True)
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    jac = mtl_backward(model, features, losses, Equal(len(TASKS)), GradientOptions(), want_jacobian=True)
    assert jac is not None and jac.shape[0] == len(TASKS)
    for p, g in zip(model.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)


def test_gradient_stats_and_heatmap_on_a_hand_made_jacobian() -> None:
    jac = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    stats = gradient_stats(jac, ["a", "b", "c"])
    assert stats["grad/b/norm"] == pytest.approx(2.0)
    assert stats["grad/cos/a-b"] == pytest.approx(0.0) and stats["grad/cos/a-c"] == pytest.approx(-1.0)
    assert stats["grad/conflicting_pairs"] == pytest.approx(1 / 3)
    image = cosine_heatmap(jac, cell=4)
    assert image.shape == (3, 12, 12) and image.min() >= 0 and image.max() <= 1
    assert image[0, 0, 8] > image[2, 0, 8]  # a-c conflict is drawn red


def test_bad_engine_options_are_clear_errors() -> None:
    with pytest.raises(UserError, match="grad_space=weights"):
        GradientOptions(grad_space="weights")
    with pytest.raises(UserError, match="jacobian_chunk must be >= 1"):
        GradientOptions(jacobian_chunk=0)


@pytest.mark.parametrize("method", [Equal(3), Mean(3)], ids=["loss-level", "gradient-level"])
def test_accumulating_micro_batches_averages_their_gradients(method: GradientWeighting | Equal) -> None:
    model, x, targets = setup()
    halves = [(x[:3], {k: v[:3] for k, v in targets.items()}), (x[3:], {k: v[3:] for k, v in targets.items()})]
    separate = []
    for xi, ti in halves:
        model.zero_grad()
        features, losses = forward(model, xi, ti)
        mtl_backward(model, features, losses, method, GradientOptions())
        separate.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad()
    for xi, ti in halves:  # accumulate, as the trainer does with accumulate_grad_batches=2
        features, losses = forward(model, xi, ti)
        mtl_backward(model, features, losses, method, GradientOptions(), grad_scale=0.5)
    for p, a, b in zip(model.parameters(), *separate, strict=True):
        assert torch.allclose(p.grad, (a + b) / 2, atol=1e-6)
