import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.gradnorm import GradNorm


def gradients(norms: list[float], p: int = 20, seed: int = 0) -> torch.Tensor:
    rows = torch.randn(len(norms), p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return rows / rows.norm(dim=1, keepdim=True) * torch.tensor(norms, dtype=torch.float64)[:, None]


@pytest.mark.parametrize("norms", [[0.5, 1.0, 2.0], [3.0, 0.2], [1.0, 1.5, 0.3, 0.8, 2.5, 0.6]])
def test_equal_training_rates_equalise_the_weighted_gradient_norms(norms: list[float]) -> None:
    t = len(norms)
    jacobian = gradients(norms)
    losses = torch.rand(t, generator=torch.Generator().manual_seed(1)) + 0.5  # constant: equal loss ratios
    method = GradNorm(t)
    weighted = []
    for _ in range(3000):
        method.aggregate(jacobian, losses)
        assert float(method.weights.sum()) == pytest.approx(t, rel=1e-5)  # sum w = T after every update
        weighted.append(method.weights.double() * jacobian.norm(dim=1))
    # The subgradient steps oscillate by about lr * ||g_t||^2: compare the averages over the last steps.
    mean = torch.stack(weighted[-300:]).mean(0)
    assert float(mean.max() / mean.min()) < 1.1
    start = torch.tensor(norms)
    assert float(start.max() / start.min()) > 2  # and they were far from equal at the start


def test_a_slower_task_gets_a_larger_weighted_gradient() -> None:
    jacobian = gradients([1.0, 1.0, 1.0])
    method = GradNorm(3, alpha=1.5, lr=0.01)
    method.aggregate(jacobian, torch.ones(3))  # L(0) = 1
    for _ in range(2000):
        method.aggregate(jacobian, torch.tensor([0.5, 1.0, 0.5]))  # task 2 trains at half the rate
    w = method.weights
    assert w[1] > 2 * w[0] and w[1] > 2 * w[2]


def test_direction_uses_the_weights_before_the_update() -> None:
    jacobian = gradients([1.0, 4.0])
    method = GradNorm(2, lr=0.05)
    d = method.aggregate(jacobian, torch.tensor([1.0, 2.0]))
    assert torch.allclose(d, jacobian.sum(0))  # w = 1 for the first step's loss
    assert torch.equal(method.initial_losses, torch.tensor([1.0, 2.0]))
    # G = [1, 4], G_bar = 2.5, r = 1: task 1 is below target (w up by lr * 1), task 2 above (w down by lr * 4).
    raw = torch.tensor([1.0 + 0.05, 1.0 - 0.05 * 4])
    assert torch.allclose(method.weights, raw * 2 / raw.sum())
    d2 = method.aggregate(jacobian, torch.tensor([1.0, 2.0]))
    assert torch.allclose(d2, method.last_weights.double() @ jacobian)
    assert torch.allclose(method.last_weights, raw * 2 / raw.sum())
    assert torch.equal(method.initial_losses, torch.tensor([1.0, 2.0]))  # L(0) is recorded once


def test_one_task_keeps_weight_one() -> None:
    g = torch.randn(1, 6)
    method = GradNorm(1)
    for _ in range(3):
        assert torch.allclose(method.aggregate(g, torch.rand(1) + 0.1), g[0])
    assert torch.equal(method.weights, torch.ones(1))


def test_state_round_trip_continues_identically() -> None:
    jacobian = gradients([0.5, 1.0, 2.0]).float()
    a = GradNorm(3)
    for k in range(5):
        a.aggregate(jacobian, torch.tensor([1.0, 0.9, 0.8]) * (1 - 0.05 * k))
    b = GradNorm(3)
    b.load_state_dict(a.state_dict())
    assert bool(b.started) and torch.equal(b.weights, a.weights)
    for _ in range(3):
        losses = torch.tensor([0.7, 0.6, 0.5])
        assert torch.equal(a.aggregate(jacobian, losses), b.aggregate(jacobian, losses))
    assert torch.equal(a.weights, b.weights)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"alpha": -0.5}, "weighting.alpha"), ({"alpha": float("nan")}, "weighting.alpha"),
    ({"lr": 0.0}, "weighting.lr"), ({"lr": -1.0}, "weighting.lr"),
])
def test_invalid_hyper_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        GradNorm(2, **kwargs)


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "gradnorm.yaml"), num_tasks=3)
    assert isinstance(method, GradNorm) and (method.alpha, method.lr) == (1.5, 0.025)
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)
