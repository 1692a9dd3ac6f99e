import math

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.stch import STCH


def test_small_mu_approaches_tchebycheff_and_a_one_hot_on_the_worst_task() -> None:
    losses = torch.tensor([1.0, 3.0, 2.0])
    w = STCH(3, mu=1e-3)
    assert w.combine(losses).item() == pytest.approx(3.0, abs=1e-3 * math.log(3) + 1e-6)
    assert torch.allclose(w.last_weights, torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    # With a preference and an ideal point: max_k lambda_k (L_k - z*) = max(2*0.5, 0.5*2.5, 1*1.5) = 1.5.
    w = STCH(3, mu=1e-3, preference=[2.0, 0.5, 1.0], ideal=0.5)
    assert w.combine(losses).item() == pytest.approx(1.5, abs=1e-3 * math.log(3) + 1e-6)
    assert torch.allclose(w.last_weights, torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)


def test_stch_lies_between_tch_and_tch_plus_mu_log_k() -> None:
    # The paper's bound: g_TCH <= g_STCH <= g_TCH + mu log K, for every mu.
    torch.manual_seed(0)
    for _ in range(50):
        k = int(torch.randint(1, 6, ()))
        mu = float(10 ** torch.empty(()).uniform_(-3, 1))
        losses = torch.rand(k, dtype=torch.float64) * 5
        w = STCH(k, mu=mu, preference=(torch.rand(k) + 0.1).tolist(), ideal=-0.5)
        pref, ideal = w.preference.double(), -0.5  # the preference as stored (float32)
        total = w.combine(losses).item()
        tch = (pref * (losses - ideal)).max().item()
        assert tch - 1e-9 <= total <= tch + mu * math.log(k) + 1e-9


def test_large_mu_gives_uniform_weights() -> None:
    losses = torch.tensor([0.1, 5.0, 2.0])
    w = STCH(3, mu=1e5)
    w.combine(losses)
    assert torch.allclose(w.last_weights, torch.full((3,), 1 / 3), atol=1e-4)
    w = STCH(3, mu=1e5, preference=[1.0, 2.0, 3.0])
    w.combine(losses)
    assert torch.allclose(w.last_weights, torch.tensor([1.0, 2.0, 3.0]) / 3, atol=1e-3)
    # In between, the weights order the tasks by their (weighted) loss.
    w = STCH(3, mu=1.0)
    w.combine(losses)
    assert w.last_weights.argsort().tolist() == [0, 2, 1]


def test_last_weights_are_the_gradient_and_the_formula_is_exact() -> None:
    torch.manual_seed(1)
    losses = (torch.rand(4, dtype=torch.float64) * 3).requires_grad_(True)
    w = STCH(4, mu=0.7, preference=[0.5, 1.0, 1.5, 2.0], ideal=0.2)
    total = w.combine(losses)
    (grad,) = torch.autograd.grad(total, losses)
    pref = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    naive = 0.7 * torch.log(torch.exp(pref * (losses.detach() - 0.2) / 0.7).sum())
    assert total.item() == pytest.approx(naive.item(), rel=1e-12)
    assert torch.allclose(grad, w.last_weights)


def test_stable_where_a_naive_exp_overflows() -> None:
    w = STCH(2, mu=1e-3)
    total = w.combine(torch.tensor([100.0, 99.0]))
    assert torch.isfinite(total) and total.item() == pytest.approx(100.0, abs=1e-3)


def test_one_task_is_its_shifted_loss() -> None:
    # mu log exp(lambda (L - z*) / mu) = lambda (L - z*): with the default lambda = 1 and z* = 0, the loss itself.
    losses = torch.tensor([0.8], requires_grad=True)
    total = STCH(1, mu=0.3).combine(losses)
    total.backward()
    assert total.item() == pytest.approx(0.8)
    assert losses.grad.item() == pytest.approx(1.0)


def test_state_dict_round_trip() -> None:
    a = STCH(3, preference=[1.0, 2.0, 3.0])
    b = STCH(3)
    b.load_state_dict(a.state_dict())
    losses = torch.tensor([0.3, 0.2, 0.1])
    assert torch.equal(a.combine(losses), b.combine(losses))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"mu": 0.0}, "mu .* must be a finite number > 0"),
    ({"mu": -1.0}, "mu .* must be a finite number > 0"),
    ({"mu": math.inf}, "mu .* must be a finite number > 0"),
    ({"preference": [1.0, 1.0]}, "2 values for 3 tasks"),
    ({"preference": [1.0, -1.0, 1.0]}, "preference must be finite, >= 0 and not all 0"),
    ({"preference": [0.0, 0.0, 0.0]}, "preference must be finite, >= 0 and not all 0"),
    ({"ideal": math.nan}, "ideal .* must be a finite number"),
])
def test_invalid_hyper_parameters_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        STCH(3, **kwargs)


def test_config_instantiates() -> None:
    cfg = OmegaConf.load(config_dir() / "weighting" / "stch.yaml")
    w = hydra.utils.instantiate(cfg, num_tasks=3)
    assert isinstance(w, STCH) and (w.mu, w.ideal) == (1.0, 0.0)
    assert torch.equal(w.preference, torch.ones(3))
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert w.combine(losses).item() == pytest.approx(math.log(math.e + math.e**2 + math.e**3))
    cfg.preference = [1.0, 2.0, 3.0]  # a ListConfig reaches the class as such
    assert torch.equal(hydra.utils.instantiate(cfg, num_tasks=3).preference, torch.tensor([1.0, 2.0, 3.0]))
