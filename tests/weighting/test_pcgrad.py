import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.pcgrad import PCGrad


def seeded(method: PCGrad, seed: int) -> PCGrad:
    method.generator = torch.Generator().manual_seed(seed)
    return method


def reference(jacobian: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """PCGrad on the P-dimensional rows themselves, straight from the paper's Algorithm 1."""
    projected = jacobian.clone()
    for i, order in enumerate(orders):
        for j in order:
            dot = projected[i] @ jacobian[j]
            if dot < 0:
                projected[i] = projected[i] - dot / jacobian[j].norm() ** 2 * jacobian[j]
    return projected


def test_two_conflicting_gradients_match_the_hand_computed_projection() -> None:
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1
    # g1' = g1 + 1/2 g2 = [0.5, 0.5] and g2' = g2 + g1 = [0, 1]; their sum is the direction.
    d = PCGrad(2).aggregate(torch.stack([g1, g2]), torch.ones(2))
    assert torch.allclose(d, torch.tensor([0.5, 1.5]))
    # With two tasks the result agrees with both gradients: d . g_i >= 0.
    assert d @ g1 >= 0 and d @ g2 >= 0


@pytest.mark.parametrize("seed", range(8))
def test_matches_the_row_wise_algorithm_and_removes_the_last_conflict(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 7, (1,), generator=gen))
    p = int(torch.randint(3, 51, (1,), generator=gen))
    jacobian = torch.randn(t, p, generator=gen, dtype=torch.float64)
    orders = seeded(PCGrad(t), 100 + seed).random_orders()
    assert all(sorted(order) == [j for j in range(t) if j != i] for i, order in enumerate(orders))
    projected = reference(jacobian, orders)
    d = seeded(PCGrad(t), 100 + seed).aggregate(jacobian, torch.ones(t))
    assert torch.allclose(d, projected.sum(0), atol=1e-10)
    # The method's own projected rows: the last task each g_i' met is never in conflict with it afterwards.
    gram = jacobian @ jacobian.T
    own = PCGrad.coefficients(gram, orders) @ jacobian
    assert torch.allclose(own, projected, atol=1e-10)
    for i, order in enumerate(orders):
        assert own[i] @ jacobian[order[-1]] >= -1e-10
    if t == 2:  # with a single other task no conflict remains at all
        assert own[0] @ jacobian[1] >= -1e-10 and own[1] @ jacobian[0] >= -1e-10


def test_non_conflicting_gradients_give_the_plain_sum() -> None:
    jacobian = torch.rand(5, 30, generator=torch.Generator().manual_seed(0))  # all positive: no conflicts
    method = PCGrad(5)
    assert torch.allclose(method.aggregate(jacobian, torch.ones(5)), jacobian.sum(0))
    assert torch.equal(method.last_weights, torch.ones(5))


def test_weights_reproduce_the_direction() -> None:
    jacobian = torch.randn(4, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    method = seeded(PCGrad(4), 3)
    d = method.aggregate(jacobian, torch.ones(4))
    assert torch.allclose(method.last_weights.double() @ jacobian, d, atol=1e-5)


def test_same_seed_same_direction() -> None:
    jacobian = torch.randn(6, 40, generator=torch.Generator().manual_seed(2))
    a = seeded(PCGrad(6), 7)
    b = seeded(PCGrad(6), 7)
    for _ in range(3):
        assert torch.equal(a.aggregate(jacobian, torch.ones(6)), b.aggregate(jacobian, torch.ones(6)))


def test_one_task_is_its_gradient() -> None:
    g = torch.randn(1, 9)
    assert torch.allclose(PCGrad(1).aggregate(g, torch.ones(1)), g[0])


def test_state_round_trip_continues_identically() -> None:
    jacobian = torch.randn(3, 10, generator=torch.Generator().manual_seed(4))
    a = seeded(PCGrad(3), 5)
    a.aggregate(jacobian, torch.ones(3))
    b = PCGrad(3)
    b.load_state_dict(a.state_dict())
    b.generator = torch.Generator().set_state(a.generator.get_state())
    assert torch.equal(a.aggregate(jacobian, torch.ones(3)), b.aggregate(jacobian, torch.ones(3)))


def test_invalid_task_count() -> None:
    with pytest.raises(UserError, match="at least one task"):
        PCGrad(0)
    with pytest.raises(ValueError, match="built for 3 tasks"):
        PCGrad(3).aggregate(torch.ones(2, 4), torch.ones(2))


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "pcgrad.yaml"), num_tasks=3)
    assert isinstance(method, PCGrad)
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)
