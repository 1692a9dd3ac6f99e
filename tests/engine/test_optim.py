import pytest
import torch
from torch import nn

from mtlssl.engine.optim import cosine, param_groups
from mtlssl.errors import UserError


def test_param_groups_apply_lr_multipliers_and_skip_decay_on_norms_and_biases() -> None:
    encoder, head = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2)
    head.bias.requires_grad_(False)  # frozen parameters are left out
    groups = param_groups([(encoder, 0.1), (head, 1.0)], lr=1.0, weight_decay=0.5)
    by_lr_wd = {(g["lr"], g["weight_decay"]): g["params"] for g in groups}
    assert by_lr_wd[(0.1, 0.5)] == [encoder[0].weight]
    assert by_lr_wd[(0.1, 0.0)] == [encoder[0].bias, encoder[1].weight, encoder[1].bias]
    assert by_lr_wd[(1.0, 0.5)] == [head.weight] and (1.0, 0.0) not in by_lr_wd


def test_param_groups_refuse_bad_settings_and_nothing_to_train() -> None:
    with pytest.raises(UserError, match="optim.lr must be > 0"):
        param_groups([(nn.Linear(2, 2), 1.0)], lr=-1.0, weight_decay=0.0)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(UserError, match="every parameter is frozen"):
        param_groups([(frozen, 1.0)], lr=1.0, weight_decay=0.0)


def test_cosine_warms_up_linearly_then_decays_to_the_floor() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = cosine(opt, total_steps=20, steps_per_epoch=5, warmup_epochs=1, final_lr_ratio=0.1)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:], strict=False))
    assert lrs[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * 14 / 15)).item()))
