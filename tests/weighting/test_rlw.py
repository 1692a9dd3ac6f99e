import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.rlw import RLW


def draw(w: RLW, n: int, k: int) -> torch.Tensor:
    out = []
    for _ in range(n):
        w.combine(torch.ones(k))
        out.append(w.last_weights)
    return torch.stack(out)


def test_weights_lie_on_the_simplex_and_weight_the_losses() -> None:
    w = RLW(4)
    w.generator = torch.Generator().manual_seed(0)
    losses = torch.tensor([0.5, 1.0, 2.0, 4.0], requires_grad=True)
    total = w.combine(losses)
    total.backward()
    assert (w.last_weights > 0).all()
    assert w.last_weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert total.item() == pytest.approx(float((w.last_weights * losses.detach()).sum()), rel=1e-6)
    assert torch.allclose(losses.grad, w.last_weights)


def test_weights_differ_between_steps_and_repeat_with_the_seed() -> None:
    a, b, c = RLW(3), RLW(3), RLW(3)
    a.generator = torch.Generator().manual_seed(7)
    b.generator = torch.Generator().manual_seed(7)
    c.generator = torch.Generator().manual_seed(8)
    wa, wb, wc = draw(a, 5, 3), draw(b, 5, 3), draw(c, 5, 3)
    assert torch.equal(wa, wb)
    assert not torch.allclose(wa[0], wa[1])
    assert not torch.allclose(wa, wc)


def test_without_a_generator_the_global_rng_is_used() -> None:
    torch.manual_seed(3)
    first = draw(RLW(3), 3, 3)
    torch.manual_seed(3)
    assert torch.equal(first, draw(RLW(3), 3, 3))


def test_weights_are_softmax_of_a_standard_normal() -> None:
    # log w_i - log w_j = z_i - z_j ~ N(0, 2) when z ~ N(0, I): this pins the distribution (a uniform z
    # would give variance 1/6, a N(0, 4I) one variance 8), and the weights are exchangeable (mean 1/K).
    w = RLW(3)
    w.generator = torch.Generator().manual_seed(0)
    weights = draw(w, 20000, 3)
    diff = weights[:, 0].log() - weights[:, 1].log()
    assert diff.var().item() == pytest.approx(2.0, rel=0.05)
    assert diff.mean().item() == pytest.approx(0.0, abs=0.05)
    assert torch.allclose(weights.mean(0), torch.full((3,), 1 / 3), atol=0.01)


def test_one_task_is_plain_training() -> None:
    # softmax of one number is 1: RLW reduces to the task's own loss.
    w = RLW(1)
    assert w.combine(torch.tensor([0.7])).item() == pytest.approx(0.7)
    assert torch.equal(w.last_weights, torch.ones(1))


def test_state_dict_round_trip_and_bad_task_count() -> None:
    # RLW keeps no state of its own: the randomness is the engine's generator.
    a, b = RLW(2), RLW(2)
    b.load_state_dict(a.state_dict())
    a.generator = torch.Generator().manual_seed(1)
    b.generator = torch.Generator().manual_seed(1)
    assert torch.equal(draw(a, 3, 2), draw(b, 3, 2))
    with pytest.raises(UserError, match="at least one task"):
        RLW(0)


def test_config_instantiates() -> None:
    w = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "rlw.yaml"), num_tasks=3)
    assert isinstance(w, RLW)
    total = w.combine(torch.tensor([1.0, 2.0, 3.0]))
    assert 1.0 < total.item() < 3.0
