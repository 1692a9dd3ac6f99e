"""DualProj (torchjd; Quinton & Rey 2024): the mean gradient projected onto the dual cone of the gradients."""

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.errors import UserError
from mtlssl.weighting.dualproj import DualProj

CONF = Path(__file__).parents[2] / "conf" / "weighting" / "dualproj.yaml"
ONES = torch.ones(6, dtype=torch.float64)


def conflicting_jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    while True:  # redraw until the mean gradient itself conflicts with a task, so the projection does something
        jac = torch.randn(t, p, generator=g, dtype=torch.float64) * torch.rand(t, 1, generator=g, dtype=torch.float64)
        if (jac @ jac.mean(0) < 0).any():
            return 5 * jac


@pytest.mark.parametrize(("t", "p", "seed"), [(2, 3, 0), (3, 10, 1), (4, 5, 2), (5, 50, 3), (6, 30, 5)])
def test_direction_is_the_projection_of_the_mean_onto_the_dual_cone(t: int, p: int, seed: int) -> None:
    jac = conflicting_jacobian(t, p, seed)
    scale, g0 = (jac**2).sum(), jac.mean(0)
    m = DualProj(t, reg_eps=0.0)
    d = m.aggregate(jac, ONES[:t])
    assert torch.all(jac @ d >= -1e-9 * scale)  # no task conflicts with d
    assert torch.all(m.last_weights >= 1 / t - 1e-12)
    # d is the closest point of the cone to g0: every sampled cone point is at least as far.
    gen = torch.Generator().manual_seed(seed)
    ys = torch.randn(20000, p, generator=gen, dtype=torch.float64) * g0.norm() + d
    ys = ys[(ys @ jac.T >= 0).all(dim=1)]
    assert len(ys) > 0 and (ys - g0).norm(dim=1).min() >= (d - g0).norm() - 1e-9
    # torchjd's default ridge weakens the guarantee to g_j . d >= -reg_eps * tr(G) * w_j.
    m = DualProj(t)
    d = m.aggregate(jac, ONES[:t])
    assert torch.all(jac @ d >= -1e-4 * scale * m.last_weights - 1e-9 * scale)


def test_non_conflicting_identical_and_single_gradients_are_kept() -> None:
    jac = torch.rand(4, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # positive: no conflict
    assert torch.allclose(DualProj(4).aggregate(jac, ONES[:4]), jac.mean(0), atol=1e-12)
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.allclose(DualProj(3).aggregate(g.repeat(3, 1), ONES[:3]), g, atol=1e-12)
    assert torch.allclose(DualProj(1).aggregate(g[None], ONES[:1]), g, atol=1e-12)


def test_matches_torchjds_documented_example() -> None:
    jac = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # torchjd's DualProj() docstring
    assert torch.allclose(DualProj(2).aggregate(jac, torch.ones(2)), torch.tensor([0.5563, 1.1109, 1.1109]), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reg_eps": -1.0}, "reg_eps must be >= 0"),
        ({"norm_eps": float("nan")}, "norm_eps must be >= 0"),
        ({"pref_vector": [1.0, 2.0, 3.0]}, "pref_vector must have one value"),
    ],
)
def test_invalid_hyper_parameters_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        DualProj(2, **kwargs)


def test_state_dict_round_trips() -> None:
    a, b = DualProj(3, pref_vector=[0.2, 0.3, 0.5]), DualProj(3, pref_vector=[0.2, 0.3, 0.5])
    b.load_state_dict(a.state_dict())
    jac = conflicting_jacobian(3, 6, 1)
    assert torch.equal(a.aggregate(jac, ONES[:3]), b.aggregate(jac, ONES[:3]))


def test_conf_instantiates_and_float32_stays_float32() -> None:
    m = hydra.utils.instantiate(OmegaConf.load(CONF), num_tasks=3)
    assert isinstance(m, DualProj) and (m.norm_eps, m.reg_eps) == (1e-4, 1e-4)
    jac = torch.randn(3, 10)
    d = m.aggregate(jac, torch.ones(3))
    assert d.shape == (10,) and d.dtype == torch.float32 and d.device == jac.device
    assert m.last_weights.dtype == torch.float32
