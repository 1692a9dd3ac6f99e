import math

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.imtl_l import IMTLL


def test_loss_formula_and_gradient() -> None:
    w = IMTLL(3)
    with torch.no_grad():
        w.log_scales.copy_(torch.tensor([0.0, math.log(2.0), -1.0]))
    losses = torch.tensor([1.0, 3.0, 2.0], requires_grad=True)
    total = w.combine(losses)
    total.backward()
    scales = torch.tensor([1.0, 2.0, math.exp(-1.0)])
    assert total.item() == pytest.approx(float((scales * losses.detach()).sum() - (0.0 + math.log(2.0) - 1.0)))
    assert torch.allclose(losses.grad, scales)
    assert torch.allclose(w.last_weights, scales)


def test_optimal_scales_make_the_scaled_losses_equal() -> None:
    # d/ds (e^s L - s) = e^s L - 1: at the optimum every scaled loss e^{s_k} L_k is 1 (the paper's balance).
    losses = torch.tensor([0.05, 1.0, 7.0])
    w = IMTLL(3)
    opt = torch.optim.SGD(w.parameters(), lr=0.05)
    for _ in range(3000):
        opt.zero_grad()
        w.combine(losses).backward()
        opt.step()
    scaled = w.last_weights * losses
    assert torch.allclose(scaled, torch.ones(3), atol=1e-3)
    assert torch.allclose(w.log_scales.detach(), -losses.log(), atol=1e-3)


def test_one_task_is_plain_training_at_the_start() -> None:
    # With s = 0 one task's loss is L (gradient 1 on L); s then tracks -log L, which rescales the task's gradient:
    # the paper does not define a one-task case, so this is the method applied to K = 1.
    losses = torch.tensor([0.4], requires_grad=True)
    total = IMTLL(1).combine(losses)
    total.backward()
    assert total.item() == pytest.approx(0.4)
    assert losses.grad.item() == pytest.approx(1.0)


def test_state_dict_round_trip() -> None:
    a = IMTLL(3, init_log_scale=0.5)
    with torch.no_grad():
        a.log_scales.add_(torch.tensor([0.1, -0.2, 0.3]))
    b = IMTLL(3)
    b.load_state_dict(a.state_dict())
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(a.combine(losses), b.combine(losses))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_invalid_init_is_a_user_error(bad: float) -> None:
    with pytest.raises(UserError, match="init_log_scale must be a finite number"):
        IMTLL(2, init_log_scale=bad)


def test_config_instantiates() -> None:
    w = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "imtl_l.yaml"), num_tasks=3)
    assert isinstance(w, IMTLL) and torch.equal(w.log_scales.detach(), torch.zeros(3))
    assert w.combine(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(6.0)
