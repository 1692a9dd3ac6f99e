"""MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task gradients."""

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.errors import UserError
from mtlssl.weighting.mgda import MGDA

CONF = Path(__file__).parents[2] / "conf" / "weighting" / "mgda.yaml"
ONES = torch.ones(6, dtype=torch.float64)


def jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, p, generator=g, dtype=torch.float64) * torch.rand(t, 1, generator=g, dtype=torch.float64) * 5


@pytest.mark.parametrize(("t", "p", "seed"), [(2, 3, 0), (3, 10, 1), (4, 5, 2), (5, 50, 3), (6, 4, 4), (6, 30, 5)])
def test_direction_is_the_min_norm_point_of_the_hull(t: int, p: int, seed: int) -> None:
    jac = jacobian(t, p, seed)
    m = MGDA(t)
    d = m.aggregate(jac, ONES[:t])
    w = m.last_weights
    assert torch.all(w >= 0) and w.sum().item() == pytest.approx(1.0)
    assert torch.allclose(d, w @ jac)
    # No convex combination is shorter (random ones, and every vertex).
    combos = torch.distributions.Dirichlet(torch.full((t,), 0.5, dtype=torch.float64)).sample((2000,))
    assert d.norm() <= (combos @ jac).norm(dim=1).min() + 1e-9
    assert d.norm() <= jac.norm(dim=1).min() + 1e-9
    # KKT, and hence a common descent direction: g_t . d >= ||d||^2 for every t.
    assert torch.all(jac @ d >= d.dot(d) - 1e-9 * jac.norm() ** 2)


def test_one_task_and_identical_gradients_give_that_gradient() -> None:
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    assert torch.allclose(MGDA(1).aggregate(g[None], ONES[:1]), g)
    assert torch.allclose(MGDA(3).aggregate(g.repeat(3, 1), ONES[:3]), g, atol=1e-12)


def test_pareto_stationary_gradients_give_zero() -> None:
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert MGDA(2).aggregate(torch.stack([g, -3 * g]), ONES[:2]).norm() < 1e-9


@pytest.mark.parametrize("normalization", ["l2", "loss", "loss+"])
def test_normalisations_weight_the_raw_gradients_by_the_normalised_min_norm_point(normalization: str) -> None:
    jac, losses = jacobian(3, 8, 7), torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    norms = jac.norm(dim=1)
    scale = {"l2": norms, "loss": losses, "loss+": losses * norms}[normalization]
    reference = MGDA(3)
    reference.aggregate(jac / scale[:, None], losses)  # the official code: MinNormSolver on g_t / n_t
    m = MGDA(3, normalization=normalization)
    d = m.aggregate(jac, losses)
    assert torch.allclose(m.last_weights, reference.last_weights, atol=1e-9)
    assert torch.allclose(d, m.last_weights @ jac)  # ... whose weights then scale the raw losses


def test_loss_normalisation_refuses_non_positive_losses() -> None:
    with pytest.raises(ValueError, match="positive losses"):
        MGDA(2, normalization="loss").aggregate(jacobian(2, 4, 0), torch.tensor([1.0, 0.0]))


def test_invalid_normalisation_is_a_user_error() -> None:
    with pytest.raises(UserError, match="normalization must be one of none, l2, loss, loss\\+"):
        MGDA(2, normalization="norm")


def test_state_dict_round_trips() -> None:
    a, b = MGDA(3, normalization="l2"), MGDA(3, normalization="l2")
    b.load_state_dict(a.state_dict())
    jac = jacobian(3, 6, 1)
    assert torch.equal(a.aggregate(jac, ONES[:3]), b.aggregate(jac, ONES[:3]))


def test_conf_instantiates_and_float32_stays_float32() -> None:
    m = hydra.utils.instantiate(OmegaConf.load(CONF), num_tasks=3)
    assert isinstance(m, MGDA) and m.normalization == "none"
    jac = torch.randn(3, 10)
    d = m.aggregate(jac, torch.ones(3))
    assert d.shape == (10,) and d.dtype == torch.float32 and d.device == jac.device
    assert m.last_weights.dtype == torch.float32
    with pytest.raises(ValueError, match="built for 3 tasks"):
        m.aggregate(torch.randn(2, 10), torch.ones(2))
