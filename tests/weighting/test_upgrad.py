"""UPGrad (Quinton & Rey 2024): the average of the task gradients, each projected onto the dual cone."""

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.errors import UserError
from mtlssl.weighting.upgrad import UPGrad

CONF = Path(__file__).parents[2] / "conf" / "weighting" / "upgrad.yaml"
ONES = torch.ones(6, dtype=torch.float64)
CASES = [(2, 3, 0), (3, 10, 1), (4, 5, 2), (5, 50, 3), (6, 4, 4), (6, 30, 5)]


def conflicting_jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    while True:  # redraw until at least one pair of gradients conflicts
        jac = torch.randn(t, p, generator=g, dtype=torch.float64) * torch.rand(t, 1, generator=g, dtype=torch.float64)
        if (jac @ jac.T < 0).any():
            return 5 * jac


@pytest.mark.parametrize(("t", "p", "seed"), CASES)
def test_direction_does_not_conflict_with_any_task(t: int, p: int, seed: int) -> None:
    jac = conflicting_jacobian(t, p, seed)
    scale = (jac**2).sum()
    exact = UPGrad(t, reg_eps=0.0)
    d = exact.aggregate(jac, ONES[:t])
    assert torch.all(jac @ d >= -1e-9 * scale)
    # torchjd's default ridge weakens the guarantee to g_j . d >= -reg_eps * tr(G) * w_j.
    m = UPGrad(t)
    d = m.aggregate(jac, ONES[:t])
    assert torch.all(jac @ d >= -1e-4 * scale * m.last_weights - 1e-9 * scale)
    assert torch.allclose(d, m.last_weights @ jac)


@pytest.mark.parametrize(("t", "p", "seed"), CASES[:4])
def test_direction_is_the_mean_of_the_individual_projections(t: int, p: int, seed: int) -> None:
    jac = conflicting_jacobian(t, p, seed)
    d = UPGrad(t, reg_eps=0.0).aggregate(jac, ONES[:t])
    projections = []
    for i in range(t):  # project g_i alone (pref e_i): DualProj-like, and each lies in the cone
        pref = [1.0 if j == i else 0.0 for j in range(t)]
        m = UPGrad(t, pref_vector=pref, reg_eps=0.0)
        projections.append(m.aggregate(jac, ONES[:t]))
        assert torch.all(jac @ projections[-1] >= -1e-9 * (jac**2).sum())
        assert m.last_weights[i] >= 1 - 1e-12  # the weights v >= e_i
    assert torch.allclose(d, torch.stack(projections).mean(0), atol=1e-9)


def test_identical_and_non_conflicting_gradients() -> None:
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.allclose(UPGrad(3).aggregate(g.repeat(3, 1), ONES[:3]), g, atol=1e-12)
    jac = torch.rand(4, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # positive: no conflict
    m = UPGrad(4)
    assert torch.allclose(m.aggregate(jac, ONES[:4]), jac.mean(0), atol=1e-12)
    assert torch.allclose(m.last_weights, torch.full((4,), 0.25, dtype=torch.float64), atol=1e-12)


def test_one_task_gives_that_gradient() -> None:
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)
    assert torch.allclose(UPGrad(1).aggregate(g[None], ONES[:1]), g, atol=1e-12)


def test_matches_torchjds_documented_example() -> None:
    jac = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # torchjd's UPGrad() docstring
    assert torch.allclose(UPGrad(2).aggregate(jac, torch.ones(2)), torch.tensor([0.2929, 1.9004, 1.9004]), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reg_eps": -1.0}, "reg_eps must be >= 0"),
        ({"norm_eps": -1.0}, "norm_eps must be >= 0"),
        ({"pref_vector": [1.0]}, "pref_vector must have one value"),
        ({"pref_vector": [1.0, -1.0]}, "pref_vector must have one value"),
    ],
)
def test_invalid_hyper_parameters_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        UPGrad(2, **kwargs)


def test_state_dict_round_trips() -> None:
    a, b = UPGrad(3), UPGrad(3)
    b.load_state_dict(a.state_dict())
    jac = conflicting_jacobian(3, 6, 1)
    assert torch.equal(a.aggregate(jac, ONES[:3]), b.aggregate(jac, ONES[:3]))


def test_conf_instantiates_and_float32_stays_float32() -> None:
    m = hydra.utils.instantiate(OmegaConf.load(CONF), num_tasks=3)
    assert isinstance(m, UPGrad) and (m.norm_eps, m.reg_eps) == (1e-4, 1e-4)
    jac = torch.randn(3, 10)
    d = m.aggregate(jac, torch.ones(3))
    assert d.shape == (10,) and d.dtype == torch.float32 and d.device == jac.device
    assert m.last_weights.dtype == torch.float32
    assert torch.equal(m.aggregate(torch.zeros(3, 10), torch.ones(3)), torch.zeros(10))  # a zero Jacobian
