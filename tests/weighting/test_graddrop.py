import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.graddrop import GradDrop


def seeded(method: GradDrop, seed: int) -> GradDrop:
    method.generator = torch.Generator().manual_seed(seed)
    return method


@pytest.mark.parametrize("seed", range(6))
def test_each_coordinate_keeps_one_sign(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 7, (1,), generator=gen))
    p = int(torch.randint(3, 51, (1,), generator=gen))
    jacobian = torch.randn(t, p, generator=gen, dtype=torch.float64)
    positive = jacobian.clamp_min(0).sum(0)
    negative = jacobian.clamp_max(0).sum(0)
    d = seeded(GradDrop(t), seed).aggregate(jacobian, torch.ones(t))
    # Per coordinate the kept contributions all share one sign: the sum of the positive or of the negative ones.
    chose_positive = torch.isclose(d, positive, atol=1e-12)
    chose_negative = torch.isclose(d, negative, atol=1e-12)
    assert bool((chose_positive | chose_negative).all())


def test_sign_is_chosen_with_probability_equal_to_the_purity() -> None:
    jacobian = torch.tensor([[3.0, 1.0, -1.0, 2.0], [-1.0, -1.0, -3.0, -2.0]], dtype=torch.float64)
    purity = 0.5 * (1 + jacobian.sum(0) / jacobian.abs().sum(0))  # [0.75, 0.5, 0.25, 0.5]
    method = seeded(GradDrop(2), 0)
    draws = torch.stack([method.aggregate(jacobian, torch.ones(2)) for _ in range(4000)])
    took_positive = (draws == jacobian.clamp_min(0).sum(0)).double().mean(0)
    assert torch.allclose(took_positive, purity, atol=0.03)


def test_agreeing_signs_give_the_sum() -> None:
    gen = torch.Generator().manual_seed(1)
    signs = torch.where(torch.rand(20, generator=gen) < 0.5, -1.0, 1.0)
    jacobian = torch.rand(4, 20, generator=gen) * signs  # every task agrees in sign on every coordinate
    method = seeded(GradDrop(4), 2)
    for _ in range(5):
        assert torch.allclose(method.aggregate(jacobian, torch.ones(4)), jacobian.sum(0))


def test_leak_one_is_the_plain_sum_and_leak_blends() -> None:
    jacobian = torch.randn(3, 15, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(seeded(GradDrop(3, leak=1.0), 0).aggregate(jacobian, torch.ones(3)), jacobian.sum(0))
    pure = seeded(GradDrop(3, leak=0.0), 5).aggregate(jacobian, torch.ones(3))
    half = seeded(GradDrop(3, leak=0.5), 5).aggregate(jacobian, torch.ones(3))  # same draws
    assert torch.allclose(half, 0.5 * jacobian.sum(0) + 0.5 * pure)


def test_same_seed_same_direction_and_seeds_matter() -> None:
    jacobian = torch.randn(5, 50, generator=torch.Generator().manual_seed(4))
    a, b, c = seeded(GradDrop(5), 9), seeded(GradDrop(5), 9), seeded(GradDrop(5), 10)
    da, db, dc = (m.aggregate(jacobian, torch.ones(5)) for m in (a, b, c))
    assert torch.equal(da, db)
    assert not torch.equal(da, dc)


def test_uses_the_global_rng_without_a_generator() -> None:
    jacobian = torch.randn(3, 30, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(11)
    first = GradDrop(3).aggregate(jacobian, torch.ones(3))
    torch.manual_seed(11)
    assert torch.equal(GradDrop(3).aggregate(jacobian, torch.ones(3)), first)


def test_one_task_is_its_gradient() -> None:
    g = torch.randn(1, 25)
    g[0, 3] = 0.0
    assert torch.equal(seeded(GradDrop(1), 0).aggregate(g, torch.ones(1)), g[0])


def test_state_round_trip_continues_identically() -> None:
    jacobian = torch.randn(3, 10, generator=torch.Generator().manual_seed(6))
    a = seeded(GradDrop(3, leak=0.2), 1)
    a.aggregate(jacobian, torch.ones(3))
    b = GradDrop(3, leak=0.2)
    b.load_state_dict(a.state_dict())
    b.generator = torch.Generator().set_state(a.generator.get_state())
    assert torch.equal(a.aggregate(jacobian, torch.ones(3)), b.aggregate(jacobian, torch.ones(3)))


@pytest.mark.parametrize("leak", [-0.1, 1.5, float("nan")])
def test_invalid_leak(leak: float) -> None:
    with pytest.raises(UserError, match=r"weighting.leak must be in \[0, 1\]"):
        GradDrop(2, leak=leak)


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "graddrop.yaml"), num_tasks=3)
    assert isinstance(method, GradDrop) and method.leak == 0.0
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)
