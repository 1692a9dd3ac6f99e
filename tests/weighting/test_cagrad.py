"""CAGrad (Liu et al., NeurIPS 2021): the best worst-task improvement within a ball around the mean gradient."""

from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.errors import UserError
from mtlssl.weighting.cagrad import CAGrad

CONF = Path(__file__).parents[2] / "conf" / "weighting" / "cagrad.yaml"
ONES = torch.ones(6, dtype=torch.float64)


def conflicting_jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    while True:  # redraw until at least one pair of gradients conflicts
        jac = torch.randn(t, p, generator=g, dtype=torch.float64) * torch.rand(t, 1, generator=g, dtype=torch.float64)
        if (jac @ jac.T < 0).any():
            return 5 * jac


def test_c_zero_is_the_mean_gradient() -> None:
    jac = conflicting_jacobian(4, 12, 0)
    for rescale in (0, 1, 2):
        assert torch.allclose(CAGrad(4, c=0.0, rescale=rescale).aggregate(jac, ONES[:4]), jac.mean(0), atol=1e-14)


@pytest.mark.parametrize(("t", "p", "seed"), [(2, 3, 0), (3, 10, 1), (4, 5, 2), (5, 50, 3), (6, 20, 4)])
@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
def test_direction_maximises_the_worst_improvement_in_the_ball(t: int, p: int, seed: int, c: float) -> None:
    jac = conflicting_jacobian(t, p, seed)
    g0 = jac.mean(0)
    d = CAGrad(t, c=c, rescale=0).aggregate(jac, ONES[:t])
    worst = (jac @ d).min()
    assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-9)  # inside the ball (on its boundary)
    assert worst >= (jac @ g0).min() - 1e-12  # at least as good as the mean gradient...
    # Zero duality gap: with d's weights 1/T + lambda w, the dual objective g_w . g0 + c ||g0|| ||g_w|| (an upper
    # bound on min_t g_t . x over the ball for every w in the simplex) equals min_t g_t . d.
    m = CAGrad(t, c=c, rescale=0)
    m.aggregate(jac, ONES[:t])
    lam = m.last_weights.sum() - 1
    g_w = ((m.last_weights - 1 / t) / lam) @ jac
    assert worst == pytest.approx((g_w @ g0 + c * g0.norm() * g_w.norm()).item(), rel=1e-9, abs=1e-12)
    # ... and as good as any point of the ball (random points, many on the boundary).
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(5000, p, generator=gen, dtype=torch.float64)
    radii = c * g0.norm() * torch.rand(5000, 1, generator=gen, dtype=torch.float64) ** 0.1
    ball = g0 + radii * dirs / dirs.norm(dim=1, keepdim=True)
    assert (ball @ jac.T).min(dim=1).values.max() <= worst + 1e-9 * g0.norm() ** 2


@pytest.mark.parametrize(("rescale", "factor"), [(0, 1.5), (1, 1.5 / 1.25), (2, 1.0)])
def test_identical_gradients_and_one_task_follow_the_official_rescaling(rescale: int, factor: float) -> None:
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    # d = g0 + c ||g0|| g_w / ||g_w|| = (1 + c) g, then / 1, / (1 + c^2) or / (1 + c).
    assert torch.allclose(CAGrad(3, rescale=rescale).aggregate(g.repeat(3, 1), ONES[:3]), factor * g)
    assert torch.allclose(CAGrad(1, rescale=rescale).aggregate(g[None], ONES[:1]), factor * g)


def test_default_rescale_divides_by_one_plus_c_squared() -> None:
    jac = conflicting_jacobian(3, 7, 5)
    raw, m = CAGrad(3, c=0.5, rescale=0).aggregate(jac, ONES[:3]), CAGrad(3)
    d = m.aggregate(jac, ONES[:3])
    assert torch.allclose(d, raw / 1.25)
    assert torch.allclose(d, m.last_weights @ jac)


def test_matches_torchjds_documented_example() -> None:
    # torchjd's CAGrad(c=0.5) docstring (no rescaling there).
    jac = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    d = CAGrad(2, c=0.5, rescale=0).aggregate(jac, torch.ones(2))
    assert torch.allclose(d, torch.tensor([0.1835, 1.2041, 1.2041]), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"c": -0.1}, "c must be >= 0"), ({"c": float("nan")}, "c must be"), ({"rescale": 3}, "rescale must be 0")],
)
def test_invalid_hyper_parameters_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        CAGrad(2, **kwargs)


def test_state_dict_round_trips() -> None:
    a, b = CAGrad(3, c=0.3), CAGrad(3, c=0.3)
    b.load_state_dict(a.state_dict())
    jac = conflicting_jacobian(3, 6, 1)
    assert torch.equal(a.aggregate(jac, ONES[:3]), b.aggregate(jac, ONES[:3]))


def test_conf_instantiates_and_float32_stays_float32() -> None:
    m = hydra.utils.instantiate(OmegaConf.load(CONF), num_tasks=3)
    assert isinstance(m, CAGrad) and (m.c, m.rescale) == (0.5, 1)
    jac = torch.randn(3, 10)
    d = m.aggregate(jac, torch.ones(3))
    assert d.shape == (10,) and d.dtype == torch.float32 and d.device == jac.device
    assert m.last_weights.dtype == torch.float32 and torch.isfinite(d).all()


def slsqp_direction(jac: torch.Tensor, c: float) -> torch.Tensor:
    """The official code's dual solve (scipy SLSQP from the mean, on the float64 Gramian, without its 1e-8
    smoothing) and its direction g0 + c ||g0|| g_w / ||g_w||, before rescaling: an independent implementation."""
    minimize = pytest.importorskip("scipy.optimize").minimize

    j64 = jac.double()
    gram, t = (j64 @ j64.T).numpy(), jac.shape[0]
    mean = np.full(t, 1 / t)
    radius = c * np.sqrt(mean @ gram @ mean)

    def dual(x: np.ndarray) -> float:
        return float(x @ gram @ mean + radius * np.sqrt(max(x @ gram @ x, 0.0)))

    res = minimize(dual, mean, bounds=[(0, 1)] * t, constraints={"type": "eq", "fun": lambda x: 1 - x.sum()},
                   method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
    g_w = torch.from_numpy(res.x) @ j64
    return j64.mean(0) + radius / g_w.norm() * g_w


def distance_and_radius(d: torch.Tensor, jac: torch.Tensor, c: float) -> tuple[float, float]:
    """||d - g0|| and the ball's radius c ||g0||."""
    g0 = jac.double().mean(0)
    return float((d.double() - g0).norm()), float(c * g0.norm())


@pytest.mark.parametrize("seed", range(6))
def test_zero_in_the_hull_up_to_round_off_stays_in_the_ball(seed: int) -> None:
    # g3 = -(g1 + g2) / 2 in float32: 0 is in the convex hull up to round-off (weights 1/4, 1/4, 1/2), and the
    # float32 Gramian is slightly indefinite. The optimum is still inside the ball, with g_w on the hull's
    # boundary; every point d of the ball has min_t g_t . d <= the dual's minimum (weak duality), which a fine grid
    # over the simplex bounds from above.
    gen = torch.Generator().manual_seed(seed)
    g12 = torch.randn(2, 50, generator=gen) * 3
    jac = torch.cat([g12, -(g12.sum(0, keepdim=True)) / 2])
    c = 0.5
    d = CAGrad(3, c=c, rescale=0).aggregate(jac, torch.ones(3))
    distance, radius = distance_and_radius(d, jac, c)
    assert torch.isfinite(d).all() and distance <= radius * (1 + 1e-5)
    j64 = jac.double()
    gram, g0 = j64 @ j64.T, j64.mean(0)
    a, b = np.meshgrid(np.arange(301), np.arange(301), indexing="ij")
    keep = a + b <= 300
    grid = torch.from_numpy(np.stack([a[keep], b[keep], 300 - a[keep] - b[keep]], axis=1) / 300)
    dual = grid @ gram @ torch.full((3,), 1 / 3, dtype=torch.float64)
    dual += c * g0.norm() * torch.einsum("ki,ij,kj->k", grid, gram, grid).clamp_min(0).sqrt()
    assert (j64 @ d.double()).min() >= dual.min() - 1e-4 * gram.trace()


@pytest.mark.parametrize("t", [3, 4, 6])
@pytest.mark.parametrize("seed", range(4))
def test_near_degenerate_random_cases_stay_in_the_ball(t: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(100 * t + seed)
    rows = torch.randn(t - 1, 40, generator=gen) * torch.exp(torch.randn(t - 1, 1, generator=gen))
    w = torch.rand(t, generator=gen) + 0.1
    last = -(w[:-1] @ rows) / w[-1]  # sum_t w_t g_t = 0 up to float32 round-off
    jac = torch.cat([rows, last[None]])[torch.randperm(t, generator=gen)]
    for c in (0.2, 0.5, 0.9):
        m = CAGrad(t, c=c, rescale=0)
        d = m.aggregate(jac, torch.ones(t))
        distance, radius = distance_and_radius(d, jac, c)
        assert torch.isfinite(d).all() and distance <= radius * (1 + 1e-5)
        assert torch.allclose(m.last_weights.double() @ jac.double(), d.double(), rtol=1e-4, atol=1e-4 * jac.norm())


@pytest.mark.parametrize(("t", "p", "seed"), [(2, 5, 0), (3, 10, 1), (4, 20, 2), (5, 8, 3), (6, 40, 4)])
@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
def test_generic_cases_match_the_official_slsqp_dual(t: int, p: int, seed: int, c: float) -> None:
    jac = conflicting_jacobian(t, p, seed).float()
    d = CAGrad(t, c=c, rescale=0).aggregate(jac, torch.ones(t))
    expected = slsqp_direction(jac, c)
    assert torch.allclose(d.double(), expected, rtol=1e-4, atol=1e-4 * expected.norm())
