import pytest
import torch

from mtlssl.engine.lars import LARS
from mtlssl.errors import UserError


def test_first_step_follows_the_trust_ratio_formula() -> None:
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    w.grad, b.grad = torch.tensor([[0.0, 2.0]]), torch.tensor([0.5, -0.5])  # ||g|| = 2
    lr, eta, wd = 0.1, 0.02, 0.1
    LARS([w, b], lr=lr, momentum=0.9, weight_decay=wd, eta=eta).step()
    trust = eta * 5.0 / (2.0 + wd * 5.0)
    w0, g = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]])
    expected_w = w0 - lr * trust * (g + wd * w0)
    assert torch.allclose(w, expected_w)
    # 1-d parameters (biases, norms) take the plain SGD step: no trust ratio, no decay.
    assert torch.allclose(b, torch.tensor([1.0, 1.0]) - lr * torch.tensor([0.5, -0.5]))


def test_step_size_is_invariant_to_the_gradient_scale() -> None:
    """The layer-wise normalisation that makes LARS stable at large batch: scaling the loss does not
    change the step (with no weight decay)."""
    steps = []
    for scale in (1.0, 1000.0):
        w = torch.nn.Parameter(torch.tensor([[1.0, -2.0, 2.0]]))
        w.grad = scale * torch.tensor([[0.3, 0.1, -0.2]])
        LARS([w], lr=0.5, eta=0.01).step()
        steps.append(w.detach().clone())
    assert torch.allclose(steps[0], steps[1], atol=1e-6)


def test_momentum_accumulates_and_bad_settings_are_refused() -> None:
    w = torch.nn.Parameter(torch.tensor([2.0]))
    opt = LARS([w], lr=1.0, momentum=0.5)
    for _ in range(2):
        w.grad = torch.tensor([1.0])
        opt.step()
    assert w.item() == pytest.approx(2.0 - 1.0 - 1.5)  # buffer 1, then 0.5 * 1 + 1
    with pytest.raises(UserError, match="lars needs lr > 0"):
        LARS([w], lr=0.0)
