import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.gradvac import GradVac


def seeded(method: GradVac, seed: int) -> GradVac:
    method.generator = torch.Generator().manual_seed(seed)
    return method


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def reference(jacobian: torch.Tensor, targets: torch.Tensor, orders: list[list[int]], beta: float) -> torch.Tensor:
    """One GradVac step on the P-dimensional rows, straight from the paper's Algorithm 1 (updates ``targets``)."""
    rows = jacobian.clone()
    for i, order in enumerate(orders):
        for j in order:
            phi, target = cos(rows[i], jacobian[j]), float(targets[i, j])
            if phi < target:
                rows[i] = rows[i] + rows[i].norm() * (
                    target * math.sqrt(1 - phi**2) - phi * math.sqrt(1 - target**2)
                ) / (jacobian[j].norm() * math.sqrt(1 - target**2)) * jacobian[j]
            targets[i, j] = (1 - beta) * target + beta * phi
    return rows.sum(0)


def test_similarities_above_target_change_nothing_but_feed_the_ema() -> None:
    jacobian = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.1]], dtype=torch.float64)  # cosine > 0 = initial target
    method = GradVac(2, beta=0.1)
    assert torch.allclose(method.aggregate(jacobian, torch.ones(2)), jacobian.sum(0))
    phi = cos(jacobian[0], jacobian[1])
    expected = torch.tensor([[0.0, 0.1 * phi], [0.1 * phi, 0.0]])
    assert torch.allclose(method.targets, expected)
    assert torch.allclose(method.last_weights, torch.ones(2))


@pytest.mark.parametrize("target", [-0.3, 0.0, 0.5, 0.9])
def test_adjusted_gradient_reaches_the_target_similarity(target: float) -> None:
    gen = torch.Generator().manual_seed(0)
    g1, g2 = torch.randn(2, 20, generator=gen, dtype=torch.float64)
    g2 = g2 - (g2 @ g1) / (g1 @ g1) * g1 - 0.6 * g1  # negative similarity, below every target tried
    method = GradVac(2, beta=0.01)
    method.targets.fill_(target)
    method.aggregate(torch.stack([g1, g2]), torch.ones(2))
    # Two tasks: g1' = g1 + c12 g2 and g2' = g2 + c21 g1, so last_weights = [1 + c21, 1 + c12].
    w = method.last_weights.double()
    g1_new, g2_new = g1 + (w[1] - 1) * g2, g2 + (w[0] - 1) * g1
    assert cos(g1_new, g2) == pytest.approx(target, abs=1e-5)
    assert cos(g2_new, g1) == pytest.approx(target, abs=1e-5)


def test_ema_update_uses_the_similarity_before_the_adjustment() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    method = GradVac(2, beta=0.25)
    method.targets.copy_(torch.tensor([[0.0, 0.2], [0.2, 0.0]]))
    method.aggregate(g, torch.ones(2))
    phi = cos(g[0], g[1])
    assert torch.allclose(method.targets[0, 1].double(), torch.tensor(0.75 * 0.2 + 0.25 * phi, dtype=torch.float64))
    assert torch.allclose(method.targets[1, 0].double(), torch.tensor(0.75 * 0.2 + 0.25 * phi, dtype=torch.float64))
    assert method.targets[0, 0] == 0 and method.targets[1, 1] == 0


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_row_wise_algorithm_over_several_steps(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 7, (1,), generator=gen))
    p = int(torch.randint(3, 51, (1,), generator=gen))
    method = seeded(GradVac(t, beta=0.3), seed)
    orders_from = seeded(GradVac(t, beta=0.3), seed)  # same generator stream: same visiting orders
    targets = torch.zeros(t, t, dtype=torch.float64)
    for _ in range(4):
        jacobian = torch.randn(t, p, generator=gen, dtype=torch.float64)
        expected = reference(jacobian, targets, orders_from.random_orders(), beta=0.3)
        assert torch.allclose(method.aggregate(jacobian, torch.ones(t)), expected, atol=1e-9)
        assert torch.allclose(method.targets.double(), targets, atol=1e-6)


def test_one_task_is_its_gradient() -> None:
    g = torch.randn(1, 7)
    assert torch.allclose(GradVac(1).aggregate(g, torch.ones(1)), g[0])


def test_state_round_trip_continues_identically() -> None:
    gen = torch.Generator().manual_seed(3)
    a = seeded(GradVac(4, beta=0.5), 2)
    for _ in range(3):
        a.aggregate(torch.randn(4, 10, generator=gen), torch.ones(4))
    b = GradVac(4, beta=0.5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.targets, a.targets) and bool(a.targets.abs().sum() > 0)
    b.generator = torch.Generator().set_state(a.generator.get_state())
    jacobian = torch.randn(4, 10, generator=gen)
    assert torch.equal(a.aggregate(jacobian, torch.ones(4)), b.aggregate(jacobian, torch.ones(4)))
    assert torch.equal(a.targets, b.targets)


@pytest.mark.parametrize("beta", [0.0, -0.1, 1.5, float("nan")])
def test_invalid_beta(beta: float) -> None:
    with pytest.raises(UserError, match=r"weighting.beta .* must be in \(0, 1\]"):
        GradVac(2, beta=beta)


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "gradvac.yaml"), num_tasks=3)
    assert isinstance(method, GradVac) and method.beta == 0.01
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)
