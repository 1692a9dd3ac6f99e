"""Nash-MTL (Navon et al., ICML 2022): the weights solve the bargaining condition G alpha = 1 / alpha."""

from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.errors import UserError
from mtlssl.weighting import solvers
from mtlssl.weighting.nash_mtl import NashMTL

CONF = Path(__file__).parents[2] / "conf" / "weighting" / "nash_mtl.yaml"
ONES = torch.ones(6, dtype=torch.float64)


def jacobian(t: int, p: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, p, generator=g, dtype=torch.float64) * torch.rand(t, 1, generator=g, dtype=torch.float64) * 5


@pytest.mark.parametrize(("t", "p", "seed"), [(2, 3, 0), (3, 10, 1), (4, 5, 2), (5, 50, 3), (6, 8, 4), (6, 30, 5)])
def test_weights_solve_the_bargaining_condition(t: int, p: int, seed: int) -> None:
    jac = jacobian(t, p, seed)
    m = NashMTL(t, max_norm=0.0)
    d = m.aggregate(jac, ONES[:t])
    alpha, gram = m.alpha, jac @ jac.T
    assert torch.all(alpha > 0) and bool(m.converged)
    assert torch.allclose(gram @ alpha, 1 / alpha, rtol=1e-8)
    # Equivalently: each task's improvement g_t . d is 1 / alpha_t, and d = sum_t alpha_t g_t.
    assert torch.allclose(jac @ d, 1 / alpha, rtol=1e-8)
    assert torch.equal(m.last_weights, alpha) and torch.allclose(d, alpha @ jac)


def test_max_norm_clips_the_direction_like_clip_grad_norm() -> None:
    jac = jacobian(3, 10, 1)
    free = NashMTL(3, max_norm=0.0).aggregate(jac, ONES[:3])
    assert free.norm() > 0.5
    m = NashMTL(3, max_norm=0.5)
    d = m.aggregate(jac, ONES[:3])
    assert torch.allclose(d, free * 0.5 / (free.norm() + 1e-6))
    assert torch.allclose(d, m.last_weights @ jac)
    assert torch.equal(NashMTL(3, max_norm=100.0).aggregate(jac, ONES[:3]), free)  # short enough: unchanged


def test_update_every_reuses_alpha_between_solves(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    real = solvers.nash_weights
    monkeypatch.setattr(solvers, "nash_weights", counting)
    m = NashMTL(3, update_every=3, max_norm=0.0)
    alphas = []
    for step in range(7):
        m.aggregate(jacobian(3, 10, step), ONES[:3])
        alphas.append(m.last_weights.clone())
    assert len(calls) == 3  # steps 0, 3 and 6
    assert torch.equal(alphas[0], alphas[1]) and torch.equal(alphas[0], alphas[2])
    assert torch.equal(alphas[3], alphas[5]) and not torch.equal(alphas[2], alphas[3])
    assert int(m.step) == 7


def test_state_dict_round_trips() -> None:
    a = NashMTL(3, update_every=2, max_norm=0.0)
    a.aggregate(jacobian(3, 10, 0), ONES[:3])  # solved at step 0; step 1 would reuse it
    b = NashMTL(3, update_every=2, max_norm=0.0)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.alpha, a.alpha) and int(b.step) == 1 and bool(b.converged)
    for step in (1, 2):  # the reuse at step 1 and the warm-started solve at step 2 agree
        jac = jacobian(3, 10, 10 + step)
        assert torch.equal(a.aggregate(jac, ONES[:3]), b.aggregate(jac, ONES[:3]))


def test_one_task_gives_the_unit_gradient() -> None:
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)
    # alpha = 1 / ||g||, so d = g / ||g|| (norm 1, then within max_norm = 1 up to clip_grad_norm_'s 1e-6).
    assert torch.allclose(NashMTL(1, max_norm=0.0).aggregate(g[None], ONES[:1]), g / 5)
    assert torch.allclose(NashMTL(1).aggregate(g[None], ONES[:1]), g / 5, atol=1e-5)


def test_pareto_stationary_gradients_give_a_finite_small_step() -> None:
    g = torch.tensor([1.0, 2.0], dtype=torch.float64)
    m = NashMTL(2, max_norm=0.0)
    d = m.aggregate(torch.stack([g, -g]), ONES[:2])  # no alpha solves the condition here
    assert torch.isfinite(d).all() and d.norm() < 1e-3 * m.alpha.norm() and not bool(m.converged)


def test_a_zero_gradient_gets_zero_weight_and_the_others_still_bargain() -> None:
    jac = jacobian(3, 10, 2)
    jac[1] = 0.0  # e.g. a task with no labels in this batch
    m = NashMTL(3, max_norm=0.0)
    d = m.aggregate(jac, ONES[:3])
    alpha, rest = m.alpha, [0, 2]
    assert alpha[1] == 0 and torch.all(alpha[rest] > 0) and bool(m.converged)
    assert torch.allclose(jac[rest] @ d, 1 / alpha[rest], rtol=1e-8)
    jac[1] = jacobian(3, 10, 3)[1]  # it comes back: the warm start must not start it at 0
    d = m.aggregate(jac, ONES[:3])
    assert torch.all(m.alpha > 0) and torch.allclose(jac @ d, 1 / m.alpha, rtol=1e-8)


def test_non_finite_gradients_leave_the_state_alone() -> None:
    m = NashMTL(3, max_norm=0.0)
    m.aggregate(jacobian(3, 10, 0), ONES[:3])
    alpha = m.alpha.clone()
    bad = jacobian(3, 10, 1)
    bad[0, 0] = float("inf")  # e.g. an AMP overflow, a step the engine skips
    assert not torch.isfinite(m.aggregate(bad, ONES[:3])).all()
    assert torch.equal(m.alpha, alpha) and bool(m.converged)


def test_matches_torchjds_documented_example() -> None:
    jac = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])  # torchjd's NashMTL(n_tasks=2) docstring
    assert torch.allclose(NashMTL(2).aggregate(jac, torch.ones(2)), torch.tensor([0.0542, 0.7061, 0.7061]), atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"update_every": 0}, "update_every must be an integer >= 1"),
        ({"max_norm": -1.0}, "max_norm must be >= 0"),
        ({"optim_niter": 0}, "optim_niter must be an integer >= 1"),
    ],
)
def test_invalid_hyper_parameters_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        NashMTL(2, **kwargs)


def test_conf_instantiates_and_float32_stays_float32() -> None:
    m = hydra.utils.instantiate(OmegaConf.load(CONF), num_tasks=3)
    assert isinstance(m, NashMTL) and (m.update_every, m.max_norm, m.optim_niter) == (1, 1.0, 20)
    jac = torch.randn(3, 10)
    d = m.aggregate(jac, torch.ones(3))
    assert d.shape == (10,) and d.dtype == torch.float32 and d.device == jac.device
    assert m.last_weights.dtype == torch.float32 and d.norm() <= 1.0 + 1e-5
