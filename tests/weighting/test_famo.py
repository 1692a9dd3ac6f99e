import math

import hydra.utils
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.famo import FAMO


class OfficialFAMO:
    """The update of the official code (Cranial-XIX/FAMO, famo.py), written out here as the reference."""

    def __init__(self, k: int, w_lr: float, gamma: float, min_losses: torch.Tensor) -> None:
        self.w = torch.zeros(k, requires_grad=True)
        self.opt = torch.optim.Adam([self.w], lr=w_lr, weight_decay=gamma)
        self.min_losses = min_losses

    def weighted_loss(self, losses: torch.Tensor) -> torch.Tensor:
        self.prev = losses.detach()
        z = F.softmax(self.w, -1).detach()
        d = losses - self.min_losses + 1e-8
        c = (z / d).sum().detach()
        return (d.log() * z / c).sum()

    def update(self, new: torch.Tensor) -> None:
        delta = (self.prev - self.min_losses + 1e-8).log() - (new - self.min_losses + 1e-8).log()
        d = torch.autograd.grad(F.softmax(self.w, -1), self.w, grad_outputs=delta)[0]
        self.opt.zero_grad()
        self.w.grad = d
        self.opt.step()


def step(w: FAMO, prev: torch.Tensor, new: torch.Tensor) -> None:
    w.combine(prev)
    with torch.no_grad():  # as the engine calls it
        w.step_end(new)


def test_logit_update_and_loss_match_the_official_adam_formula() -> None:
    torch.manual_seed(0)
    k, mins = 4, torch.tensor([0.0, 0.1, 0.0, 0.2])
    ours = FAMO(k, w_lr=0.3, gamma=0.01, min_losses=mins.tolist())
    ref = OfficialFAMO(k, 0.3, 0.01, mins)
    for _ in range(25):
        prev = (mins + torch.rand(k) + 0.1).requires_grad_(True)
        new = mins + (prev.detach() - mins) * (0.5 + 0.6 * torch.rand(k))  # some tasks improve, some get worse
        total = ours.combine(prev)
        (grad,) = torch.autograd.grad(total, prev)
        ref_prev = prev.detach().clone().requires_grad_(True)
        ref_total = ref.weighted_loss(ref_prev)
        (ref_grad,) = torch.autograd.grad(ref_total, ref_prev)
        assert torch.allclose(total, ref_total, rtol=1e-6, atol=1e-7)
        assert torch.allclose(grad, ref_grad, rtol=1e-6, atol=1e-7)
        assert torch.allclose(ours.last_weights, ref_grad, rtol=1e-6, atol=1e-7)
        assert ours.last_weights.sum().item() == pytest.approx(1.0, abs=1e-6)
        with torch.no_grad():
            ours.step_end(new)
        ref.update(new)
        assert torch.allclose(ours.logits, ref.w.detach(), rtol=1e-6, atol=1e-7)
    assert ours.logits.abs().max() > 0.5  # the logits really moved: the comparison is not between zeros
    assert int(ours.adam_step) == 25


def test_the_task_whose_loss_fell_least_gains_weight() -> None:
    w = FAMO(3)
    prev, new = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.5, 0.9, 0.7])
    step(w, prev, new)
    # log-decreases 0.69, 0.11, 0.36 (mean 0.39): task 1 fell least (logit up), task 0 most (logit down),
    # task 2 a little below the mean (logit up). Adam's first step is lr * sign(gradient).
    assert w.logits[1].item() == pytest.approx(0.025, rel=1e-4)
    assert w.logits[0].item() == pytest.approx(-0.025, rel=1e-4)
    assert w.logits[2].item() > 0
    for _ in range(50):
        step(w, prev, new)
    z = torch.softmax(w.logits, 0)
    assert z.argmax().item() == 1 and z.argmin().item() == 0


def test_combine_gradient_weights_are_the_inverse_loss_scaled_softmax() -> None:
    # dL/dL_k = z_k / (c D_k), c = 1 / sum_i z_i / D_i: at equal logits the weights are proportional to 1 / L_k,
    # i.e. a step on sum_k log L_k, which asks every task for the same relative decrease.
    w = FAMO(3)
    losses = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    w.combine(losses).backward()
    inv = 1 / losses.detach()
    assert torch.allclose(losses.grad, inv / inv.sum())


def test_one_task_keeps_weight_one_and_the_plain_gradient() -> None:
    # With K = 1 the softmax is constant, so the logit never moves and dL/dL_1 = 1: plain training on L
    # (the scalar returned is D log D, not L, but only its gradient matters).
    w = FAMO(1)
    for prev, new in ((2.0, 1.0), (1.0, 1.5), (0.3, 0.1)):
        losses = torch.tensor([prev], requires_grad=True)
        w.combine(losses).backward()
        assert losses.grad.item() == pytest.approx(1.0)
        with torch.no_grad():
            w.step_end(torch.tensor([new]))
    assert torch.equal(w.logits, torch.zeros(1))


def test_state_dict_round_trip_reproduces_later_updates_exactly() -> None:
    torch.manual_seed(2)
    seq = [(torch.rand(3) + 0.5, torch.rand(3) + 0.4) for _ in range(12)]
    a = FAMO(3, w_lr=0.1)
    for prev, new in seq[:6]:
        step(a, prev, new)
    state = a.state_dict()
    assert {"logits", "exp_avg", "exp_avg_sq", "adam_step", "min_losses"} <= set(state)
    assert "prev_losses" not in state
    b = FAMO(3, w_lr=0.1)
    b.load_state_dict(state)
    logits_only = FAMO(3, w_lr=0.1)  # without the Adam moments the trajectory differs: the test can fail
    logits_only.logits.copy_(a.logits)
    for prev, new in seq[6:]:
        for w in (a, b, logits_only):
            step(w, prev, new)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.exp_avg, b.exp_avg) and torch.equal(a.exp_avg_sq, b.exp_avg_sq)
    assert not torch.allclose(a.logits, logits_only.logits)


def test_step_end_needs_a_combine_first() -> None:
    w = FAMO(2)
    with pytest.raises(RuntimeError, match="preceding combine"):
        w.step_end(torch.ones(2))
    step(w, torch.ones(2), torch.ones(2))
    with pytest.raises(RuntimeError, match="preceding combine"):  # one update per combine
        w.step_end(torch.ones(2))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"w_lr": 0.0}, "w_lr must be > 0"),
    ({"w_lr": math.nan}, "w_lr must be > 0"),
    ({"gamma": -0.1}, "gamma .* must be >= 0"),
    ({"min_losses": [0.0, 0.0]}, "min_losses must be one finite number or one per task"),
    ({"min_losses": math.inf}, "min_losses must be one finite number or one per task"),
])
def test_invalid_hyper_parameters_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        FAMO(3, **kwargs)


def test_config_instantiates_with_the_paper_defaults() -> None:
    w = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "famo.yaml"), num_tasks=3)
    assert isinstance(w, FAMO) and w.needs_post_step_losses
    assert (w.w_lr, w.gamma) == (0.025, 0.001)
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w.combine(losses).backward()
    assert torch.isfinite(losses.grad).all()
    w.step_end(torch.tensor([0.9, 1.9, 2.5]))
    per_task = hydra.utils.instantiate(OmegaConf.create({"_target_": "mtlssl.weighting.famo.FAMO",
                                                         "min_losses": [0.0, 0.1, 0.2]}), num_tasks=3)
    assert torch.allclose(per_task.min_losses, torch.tensor([0.0, 0.1, 0.2]))
