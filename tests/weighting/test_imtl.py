import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.imtl import IMTL
from mtlssl.weighting.imtl_g import IMTLG


def test_sets_the_closed_form_gradient_of_the_log_scales() -> None:
    method = IMTL(3)
    with torch.no_grad():
        method.log_scales.copy_(torch.tensor([0.5, -1.0, 0.0]))
    losses = torch.tensor([2.0, 0.3, 1.0])
    method.aggregate(torch.randn(3, 8), losses)
    # d/ds_t sum_k (e^{s_k} L_k - s_k) = e^{s_t} L_t - 1, checked against autograd.
    s = method.log_scales.detach().clone().requires_grad_(True)
    (s.exp() * losses - s).sum().backward()
    assert torch.allclose(method.log_scales.grad, s.grad)
    # Assigned, not accumulated: a second call gives the same gradient.
    method.aggregate(torch.randn(3, 8), losses)
    assert torch.allclose(method.log_scales.grad, s.grad)


@pytest.mark.parametrize("seed", range(5))
def test_imtl_g_on_the_scaled_gradients(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 7, (1,), generator=gen))
    jacobian = torch.randn(t, 30, generator=gen, dtype=torch.float64)
    method = IMTL(t)
    with torch.no_grad():
        method.log_scales.copy_(torch.randn(t, generator=gen))
    d = method.aggregate(jacobian, torch.rand(t, generator=gen) + 0.1)
    scales = method.log_scales.detach().double().exp()
    alpha = IMTLG.weights(jacobian * scales[:, None])
    assert torch.allclose(d, (alpha * scales) @ jacobian, atol=1e-6)
    assert torch.allclose(method.last_weights.double(), alpha * scales, atol=1e-5)
    # Scaling a row keeps its unit vector, so the impartiality property holds for the raw gradients too.
    proj = (jacobian / jacobian.norm(dim=1, keepdim=True)) @ d
    assert torch.allclose(proj, proj.mean().expand(t), rtol=1e-6)


def test_the_stage_optimizer_drives_the_scaled_losses_to_one() -> None:
    method = IMTL(3)
    losses = torch.tensor([4.0, 0.5, 1.5])
    opt = torch.optim.SGD(method.parameters(), lr=0.1)
    jacobian = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    for _ in range(500):
        opt.zero_grad()
        method.aggregate(jacobian, losses)
        opt.step()
    # The minimiser of e^s L - s is s = -log L (IMTL-L's balanced scaled losses e^s L = 1).
    assert torch.allclose(method.log_scales.detach(), -losses.log(), atol=1e-3)


def test_one_task_is_its_scaled_gradient() -> None:
    method = IMTL(1, init_log_scale=0.3)
    g = torch.randn(1, 6)
    assert torch.allclose(method.aggregate(g, torch.ones(1)), torch.exp(torch.tensor(0.3)) * g[0])


def test_state_round_trip_continues_identically() -> None:
    a = IMTL(3)
    with torch.no_grad():
        a.log_scales.copy_(torch.tensor([0.1, -0.2, 0.3]))
    b = IMTL(3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.log_scales, b.log_scales)
    jacobian, losses = torch.randn(3, 10), torch.rand(3) + 0.5
    assert torch.equal(a.aggregate(jacobian, losses), b.aggregate(jacobian, losses))
    assert torch.equal(a.log_scales.grad, b.log_scales.grad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_invalid_init_log_scale(value: float) -> None:
    with pytest.raises(UserError, match="weighting.init_log_scale must be a finite number"):
        IMTL(2, init_log_scale=value)


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "imtl.yaml"), num_tasks=3)
    assert isinstance(method, IMTL)
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)
    assert method.log_scales.grad.dtype == torch.float32


@pytest.mark.parametrize("zero", range(3))
def test_a_zero_gradient_is_left_out_of_the_solve(zero: int) -> None:
    # IMTL-G of the other two scaled gradients e^{s_t} g_t, in the paper's two-task closed form:
    # d = a h1 + (1 - a) h2 with d . (u1 - u2) = 0.
    gen = torch.Generator().manual_seed(20 + zero)
    jacobian = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    jacobian[zero] = 0
    method = IMTL(3)
    with torch.no_grad():
        method.log_scales.copy_(torch.randn(3, generator=gen))
    d = method.aggregate(jacobian, torch.rand(3, generator=gen) + 0.1)
    scales = method.log_scales.detach().double().exp()
    i, j = (k for k in range(3) if k != zero)
    h1, h2 = scales[i] * jacobian[i], scales[j] * jacobian[j]
    du = h1 / h1.norm() - h2 / h2.norm()
    a = -(h2 @ du) / ((h1 - h2) @ du)
    assert d.norm() > 0.1 * min(h1.norm(), h2.norm())
    assert torch.allclose(d, a * h1 + (1 - a) * h2, rtol=1e-6, atol=1e-6)
    assert method.last_weights[zero] == 0


def test_an_all_zero_jacobian_gives_a_zero_direction_without_nan() -> None:
    method = IMTL(3)
    d = method.aggregate(torch.zeros(3, 7), torch.ones(3))
    assert torch.equal(d, torch.zeros(7)) and torch.isfinite(method.last_weights).all()
