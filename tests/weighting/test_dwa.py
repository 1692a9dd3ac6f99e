import math

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.dwa import DWA


def weights_after(w: DWA, losses: torch.Tensor) -> torch.Tensor:
    w.combine(losses)
    return w.last_weights


def test_weights_are_one_for_the_first_two_epochs() -> None:
    w = DWA(3)
    losses = torch.tensor([0.5, 2.0, 1.0])
    assert torch.equal(weights_after(w, losses), torch.ones(3))  # epoch 0
    w.epoch_end(torch.tensor([3.0, 1.0, 2.0]))
    assert torch.equal(weights_after(w, losses), torch.ones(3))  # epoch 1: only one epoch loss, no ratio yet
    assert w.combine(losses).item() == pytest.approx(3.5)


def test_weights_match_the_closed_form_after_two_epochs() -> None:
    w = DWA(2, temperature=2.0)
    w.epoch_end(torch.tensor([2.0, 2.0]))
    w.epoch_end(torch.tensor([1.0, 2.0]))
    # r = [1/2, 2/2]; w = 2 exp(r/2) / sum exp(r/2) = 2 e^0.25 / (e^0.25 + e^0.5), 2 e^0.5 / (...)
    expected = torch.tensor([2 * math.exp(0.25), 2 * math.exp(0.5)]) / (math.exp(0.25) + math.exp(0.5))
    assert torch.allclose(weights_after(w, torch.ones(2)), expected)
    assert expected.tolist() == pytest.approx([0.875647, 1.124353], abs=1e-6)  # the hand-computed values
    # The slower task (its loss did not fall) gets the larger weight; the loss is the weighted sum.
    losses = torch.tensor([0.3, 0.7], requires_grad=True)
    total = w.combine(losses)
    total.backward()
    assert total.item() == pytest.approx(float((expected * losses.detach()).sum()))
    assert torch.allclose(losses.grad, expected)


def test_only_the_last_two_epochs_count_and_weights_sum_to_k() -> None:
    torch.manual_seed(0)
    w = DWA(4, temperature=0.7)
    history = torch.rand(6, 4) + 0.1
    for t, epoch_losses in enumerate(history):
        w.epoch_end(epoch_losses)
        if t >= 1:
            ratio = history[t] / history[t - 1]
            expected = 4 * torch.softmax(ratio / 0.7, dim=0)
            got = weights_after(w, torch.ones(4))
            assert torch.allclose(got, expected, atol=1e-6)
            assert got.sum().item() == pytest.approx(4.0, abs=1e-5)


def test_one_task_is_plain_training() -> None:
    # With K = 1 the softmax is 1 and w = K * 1 = 1 at every epoch: DWA reduces to the task's own loss.
    w = DWA(1)
    for loss in (3.0, 1.0, 0.2):
        w.epoch_end(torch.tensor([loss]))
        assert w.combine(torch.tensor([0.4])).item() == pytest.approx(0.4)


def test_state_dict_round_trip_resumes_the_history() -> None:
    a = DWA(3)
    a.epoch_end(torch.tensor([1.0, 2.0, 3.0]))
    b = DWA(3)
    b.load_state_dict(a.state_dict())
    for w in (a, b):
        w.epoch_end(torch.tensor([0.5, 2.0, 2.5]))
    assert int(b.epochs_seen) == 2
    assert torch.equal(weights_after(a, torch.ones(3)), weights_after(b, torch.ones(3)))
    assert not torch.equal(a.last_weights, torch.ones(3))


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan])
def test_invalid_temperature_is_a_user_error(temperature: float) -> None:
    with pytest.raises(UserError, match="temperature must be > 0"):
        DWA(2, temperature=temperature)
    with pytest.raises(UserError):
        DWA(0)


def test_config_instantiates_with_the_paper_default() -> None:
    w = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "dwa.yaml"), num_tasks=3)
    assert isinstance(w, DWA) and w.temperature == 2.0
    assert w.combine(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(6.0)
