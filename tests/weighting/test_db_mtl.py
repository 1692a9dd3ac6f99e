import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.db_mtl import DBMTL


def problem(t: int, p: int, seed: int, steps: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(t, p, generator=gen, dtype=torch.float64), torch.rand(t, generator=gen, dtype=torch.float64)
             + 0.1) for _ in range(steps)]


@pytest.mark.parametrize("seed", range(6))
def test_multiplying_a_loss_by_a_constant_changes_nothing(seed: int) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    t = int(torch.randint(2, 7, (1,), generator=gen))
    p = int(torch.randint(3, 51, (1,), generator=gen))
    c = 10 ** (4 * torch.rand(t, generator=gen, dtype=torch.float64) - 2)  # c_t in [1e-2, 1e2]
    plain, scaled = DBMTL(t), DBMTL(t)
    for jacobian, losses in problem(t, p, seed):
        # L_t -> c_t L_t multiplies g_t by c_t too; log(c_t L_t) has the same gradient. Exact up to the
        # reference code's guard g / (L + 1e-8): a relative error of at most 1e-8 / (c_t L_t) <= 1e-5 here.
        d = plain.aggregate(jacobian, losses)
        assert (scaled.aggregate(jacobian * c[:, None], losses * c) - d).norm() <= 1e-4 * d.norm()


@pytest.mark.parametrize("seed", range(4))
def test_balanced_gradients_all_have_the_largest_norm(seed: int) -> None:
    method = DBMTL(5)
    for jacobian, losses in problem(5, 30, seed):
        d = method.aggregate(jacobian, losses)
        ema = method.grad_ema.double()
        norms = ema.norm(dim=1)
        balanced = method.last_weights.double()[:, None] * ema
        assert torch.allclose(balanced.norm(dim=1), norms.max().expand(5), rtol=1e-5)
        assert torch.allclose(balanced.sum(0), d, rtol=1e-5, atol=1e-5)  # last_weights is float32


def test_ema_follows_the_decaying_rate() -> None:
    (j1, l1), (j2, l2) = problem(3, 8, 0, steps=2)
    method = DBMTL(3, beta=0.9, beta_sigma=0.5)
    method.aggregate(j1, l1)
    first = 0.1 * j1 / (l1[:, None] + 1e-8)  # beta_1 = 0.9, the EMA starts at 0
    assert torch.allclose(method.grad_ema, first)
    method.aggregate(j2, l2)
    rate = 0.9 / math.sqrt(2)
    assert torch.allclose(method.grad_ema, rate * first + (1 - rate) * j2 / (l2[:, None] + 1e-8))
    assert int(method.step) == 2


def test_one_task_is_its_log_loss_gradient_ema() -> None:
    g, loss = torch.randn(1, 7, dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    method = DBMTL(1)
    assert torch.allclose(method.aggregate(g, loss), 0.1 * g[0] / 2.0)  # (1 - beta) g / L on the first step
    assert torch.allclose(method.last_weights, torch.ones(1))


def test_state_round_trip_includes_the_lazily_created_ema() -> None:
    steps = problem(3, 10, 5, steps=5)
    a = DBMTL(3)
    for jacobian, losses in steps[:3]:
        a.aggregate(jacobian, losses)
    state = a.state_dict()
    assert state["grad_ema"].shape == (3, 10) and int(state["step"]) == 3
    b = DBMTL(3)  # EMA not allocated yet: loading resizes it
    assert b.grad_ema.shape == (3, 0)
    b.load_state_dict(state)
    assert torch.equal(b.grad_ema, a.grad_ema) and int(b.step) == 3
    for jacobian, losses in steps[3:]:
        assert torch.equal(a.aggregate(jacobian, losses), b.aggregate(jacobian, losses))
    # A fresh module's (empty) state also loads into a used one.
    a.load_state_dict(DBMTL(3).state_dict())
    assert a.grad_ema.shape == (3, 0) and int(a.step) == 0


def test_refuses_negative_losses_and_a_changed_parameter_count() -> None:
    method = DBMTL(2)
    with pytest.raises(UserError, match="task loss must be >= 0"):
        method.aggregate(torch.randn(2, 4), torch.tensor([1.0, -0.5]))
    method.aggregate(torch.randn(2, 4), torch.tensor([1.0, 0.5]))
    with pytest.raises(ValueError, match="EMA for 4 shared parameters"):
        method.aggregate(torch.randn(2, 5), torch.tensor([1.0, 0.5]))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"beta": 1.0}, r"weighting.beta .* must be in \[0, 1\)"), ({"beta": -0.1}, "weighting.beta "),
    ({"beta_sigma": -1.0}, "weighting.beta_sigma"), ({"beta_sigma": float("inf")}, "weighting.beta_sigma"),
])
def test_invalid_hyper_parameters(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        DBMTL(2, **kwargs)


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "db_mtl.yaml"), num_tasks=3)
    assert isinstance(method, DBMTL) and (method.beta, method.beta_sigma) == (0.9, 0.5)
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)
