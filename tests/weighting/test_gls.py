import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.gls import GLS


def test_total_is_the_geometric_mean() -> None:
    assert GLS(3).combine(torch.tensor([1.0, 4.0, 16.0])).item() == pytest.approx(4.0)
    torch.manual_seed(0)
    losses = torch.rand(5, dtype=torch.float64) * 3 + 0.01
    assert GLS(5).combine(losses).item() == pytest.approx(losses.prod().item() ** (1 / 5), rel=1e-12)


def test_gradient_is_total_over_k_times_each_loss() -> None:
    torch.manual_seed(1)
    losses = (torch.rand(4, dtype=torch.float64) + 0.05).requires_grad_(True)
    w = GLS(4)
    total = w.combine(losses)
    (grad,) = torch.autograd.grad(total, losses)
    expected = total.detach() / (4 * losses.detach())
    assert torch.allclose(grad, expected)
    assert torch.allclose(w.last_weights, expected)
    assert torch.autograd.gradcheck(GLS(4).combine, (losses,))


def test_product_that_would_overflow_stays_finite() -> None:
    # prod = 1e120 overflows float32; the log-domain mean does not.
    losses = torch.tensor([1e30, 1e30, 1e30, 1e30])
    assert losses.prod().isinf()
    assert GLS(4).combine(losses).item() == pytest.approx(1e30, rel=1e-5)


def test_one_task_is_plain_training() -> None:
    # (L)^(1/1) = L, gradient 1.
    losses = torch.tensor([0.3], requires_grad=True)
    total = GLS(1).combine(losses)
    total.backward()
    assert total.item() == pytest.approx(0.3)
    assert losses.grad.item() == pytest.approx(1.0)


def test_state_dict_round_trip_and_bad_task_count() -> None:
    a, b = GLS(2), GLS(2)
    b.load_state_dict(a.state_dict())  # stateless: nothing but must load
    losses = torch.tensor([2.0, 8.0])
    assert a.combine(losses).item() == b.combine(losses).item() == pytest.approx(4.0)
    with pytest.raises(UserError, match="at least one task"):
        GLS(0)


def test_config_instantiates() -> None:
    w = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "gls.yaml"), num_tasks=3)
    assert isinstance(w, GLS)
    assert w.combine(torch.tensor([1.0, 2.0, 4.0])).item() == pytest.approx(2.0)
