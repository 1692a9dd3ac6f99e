import pytest
import torch

import mtlssl.weighting as weighting
from mtlssl.errors import UserError


def test_equal_is_the_sum() -> None:
    losses = torch.tensor([0.5, 2.0, 1.5], requires_grad=True)
    total = weighting.get("equal", 3).combine(losses)
    total.backward()
    assert total.item() == pytest.approx(4.0)
    assert torch.equal(losses.grad, torch.ones(3))


def test_static_uses_the_weights_in_task_order() -> None:
    w = weighting.get("static", 3, weights=[1.0, 0.0, 2.0])
    assert w.combine(torch.tensor([1.0, 5.0, 3.0])).item() == pytest.approx(7.0)
    assert torch.equal(w.last_weights, torch.tensor([1.0, 0.0, 2.0]))


def test_static_refuses_a_wrong_number_of_weights() -> None:
    with pytest.raises(UserError, match="2 values for 3 tasks"):
        weighting.get("static", 3, weights=[1.0, 1.0])


def test_uncertainty_matches_kendall_and_learns_the_optimal_variance() -> None:
    w = weighting.get("uncertainty", 2, init_log_var=0.0)
    losses = torch.tensor([2.0, 0.5])
    # 0.5 * exp(-s) * L + 0.5 * s at s = 0
    assert w.combine(losses).item() == pytest.approx(0.5 * 2.0 + 0.5 * 0.5)
    # For fixed losses the minimiser is s_t = log L_t: the learned variance tracks each task's loss.
    opt = torch.optim.SGD(w.parameters(), lr=0.5)
    for _ in range(400):
        opt.zero_grad()
        w.combine(losses).backward()
        opt.step()
    assert torch.allclose(w.log_vars.detach(), losses.log(), atol=1e-3)
    assert torch.allclose(w.last_weights, 0.5 / losses, atol=1e-3)


def test_state_round_trips_through_state_dict() -> None:
    a = weighting.get("uncertainty", 3)
    with torch.no_grad():
        a.log_vars.copy_(torch.tensor([0.1, -0.2, 0.3]))
    b = weighting.get("uncertainty", 3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.log_vars, b.log_vars)


def test_unknown_method_and_task_count_mismatch() -> None:
    with pytest.raises(UserError, match="unknown weighting method 'nope'"):
        weighting.get("nope", 2)
    with pytest.raises(ValueError, match="built for 2 tasks"):
        weighting.get("equal", 2).combine(torch.ones(3))
