"""``task_specific_weights``: the weight of each task's loss in the gradient of its own head, per method.

Each expected value is computed here from the method's paper or official code, not read back from the method:
DB-MTL's heads get the gradient of log(L_t + 1e-8), IMTL's of e^{s_t} L_t, Nash-MTL's of alpha_t L_t (alpha
solving G alpha = 1 / alpha, before the shared-gradient clipping), GradNorm's of w_t L_t, MGDA's of w_t L_t
(the min-norm weights, as the official training loop scales the losses) and PCGrad's of c_t L_t (c_t the
coefficient of g_t in the sum of the projected gradients, as the official projection over all variables gives
it). Every other method gives each head its raw task gradient (weight 1).
"""

from __future__ import annotations

import pytest
import torch

from mtlssl import weighting
from mtlssl.weighting.db_mtl import DBMTL
from mtlssl.weighting.gradnorm import GradNorm
from mtlssl.weighting.imtl import IMTL
from mtlssl.weighting.mgda import MGDA
from mtlssl.weighting.nash_mtl import NashMTL
from mtlssl.weighting.pcgrad import PCGrad

SETS_HEAD_WEIGHTS = {"db_mtl", "imtl", "nash_mtl", "gradnorm", "mgda", "pcgrad"}
EXTRA = {"static": {"weights": [1.0, 2.0, 3.0]}}


def jacobian(t: int, p: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(t, p, generator=g, dtype=torch.float64) * torch.exp(torch.randn(t, 1, generator=g))).to(dtype)


def check_buffer(method: weighting.Weighting, losses: torch.Tensor) -> torch.Tensor:
    """The buffer is detached float32 on the losses' device, one value per task."""
    w = method.task_specific_weights
    assert w.shape == (method.num_tasks,) and w.dtype == torch.float32 and w.device == losses.device
    assert not w.requires_grad
    return w.double()


@pytest.mark.parametrize("name", sorted(weighting.METHODS))
def test_default_is_one_and_not_saved(name: str) -> None:
    method = weighting.get(name, 3, **EXTRA.get(name, {}))
    assert torch.equal(method.task_specific_weights, torch.ones(3))
    assert "task_specific_weights" not in method.state_dict()  # derived each step, never checkpointed


@pytest.mark.parametrize("name", sorted(set(weighting.GRADIENT_METHODS) - SETS_HEAD_WEIGHTS))
def test_methods_whose_heads_get_their_raw_gradient_keep_ones(name: str) -> None:
    method = weighting.get(name, 3)
    method.generator = torch.Generator().manual_seed(0)
    losses = torch.tensor([0.5, 2.0, 4.0])
    method.aggregate(jacobian(3, 12, 1, torch.float32), losses)
    assert torch.equal(check_buffer(method, losses), torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(weighting.LOSS_METHODS))
def test_loss_methods_keep_ones(name: str) -> None:
    # One backward of combine(losses) already weights each head by its loss's weight.
    method = weighting.get(name, 3, **EXTRA.get(name, {}))
    method.combine(torch.tensor([0.5, 2.0, 4.0], requires_grad=True))
    assert torch.equal(method.task_specific_weights, torch.ones(3))


def test_db_mtl_heads_get_the_log_loss_gradient() -> None:
    # LibMTL's DB_MTL (the authors' code) back-propagates log(L_t + 1e-8) through every parameter: the head's
    # gradient is g_head / (L_t + 1e-8).
    losses = torch.tensor([0.25, 1.0, 8.0])
    method = DBMTL(3)
    for step in range(2):  # the EMA does not enter the heads' weights
        method.aggregate(jacobian(3, 10, step, torch.float32), losses * (step + 1))
        expected = 1.0 / (losses.double() * (step + 1) + 1e-8)
        torch.testing.assert_close(check_buffer(method, losses), expected, rtol=1e-6, atol=0)


def test_imtl_heads_get_the_scaled_loss_gradient() -> None:
    # Liu et al. 2021, Algorithm 1 (and LibMTL): task-specific parameters follow the gradient of e^{s_t} L_t - s_t.
    method = IMTL(3)
    with torch.no_grad():
        method.log_scales.copy_(torch.tensor([0.7, -1.2, 0.0]))
    losses = torch.tensor([1.0, 2.0, 3.0])
    method.aggregate(jacobian(3, 10, 0, torch.float32), losses)
    expected = torch.tensor([0.7, -1.2, 0.0], dtype=torch.float64).exp()
    torch.testing.assert_close(check_buffer(method, losses), expected, rtol=1e-6, atol=0)


def test_nash_mtl_heads_get_alpha_before_the_clipping() -> None:
    # Official code: loss = sum_t alpha_t L_t; loss.backward(); clip_grad_norm_(shared_parameters, max_norm): the
    # heads keep alpha_t g_t. alpha is the bargaining solution G alpha = 1 / alpha of the raw Gramian.
    jac = jacobian(3, 10, 2)
    method = NashMTL(3, max_norm=0.01)  # a clipping that certainly acts on the shared direction
    losses = torch.ones(3, dtype=torch.float64)
    d = method.aggregate(jac, losses)
    assert float(d.norm()) < 0.02
    alpha = check_buffer(method, losses)
    gram = jac @ jac.T
    torch.testing.assert_close(gram @ alpha, 1 / alpha, rtol=1e-5, atol=0)
    # Reused alpha between solves (update_every) reaches the heads too.
    method = NashMTL(3, update_every=2, max_norm=0.0)
    method.aggregate(jac, losses)
    first = check_buffer(method, losses)
    method.aggregate(jacobian(3, 10, 3), losses)
    torch.testing.assert_close(check_buffer(method, losses), first)


def test_gradnorm_heads_get_this_steps_weights() -> None:
    # Chen et al. 2018, Algorithm 1: the whole network descends sum_t w_t L_t with this step's w; then w takes its
    # own step on L_grad = sum_t |w_t ||g_t|| - mean_s(w_s ||g_s||) r_t^alpha| and is renormalised to sum T.
    jac, lr, alpha = jacobian(3, 10, 4), 0.025, 1.5
    method = GradNorm(3, alpha=alpha, lr=lr)
    first, second = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.8, 1.0, 0.5])
    method.aggregate(jac, first)
    torch.testing.assert_close(check_buffer(method, first), torch.ones(3, dtype=torch.float64))
    method.aggregate(jac, second)
    # The paper's update after step 1, here: w = 1, equal loss ratios (r = 1), so the target is mean ||g||.
    norms = jac.norm(dim=1)
    w = torch.ones(3, dtype=torch.float64) - lr * torch.sign(norms - norms.mean()) * norms
    w = w * 3 / w.sum()
    torch.testing.assert_close(check_buffer(method, second), w, rtol=1e-6, atol=0)


@pytest.mark.parametrize("normalization", ["none", "l2"])
def test_mgda_heads_get_the_min_norm_weights(normalization: str) -> None:
    # Official training loop (train_multi_task.py): loss = sum_t scale[t] * loss_t; loss.backward() reaches the
    # heads. Two tasks: the min-norm weight of Sener & Koltun's Algorithm 1 on the normalised gradients.
    jac = jacobian(2, 8, 5)
    scaled = jac / jac.norm(dim=1, keepdim=True) if normalization == "l2" else jac
    g1, g2 = scaled
    gamma = ((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2))).clamp(0, 1)
    method = MGDA(2, normalization=normalization)
    losses = torch.ones(2, dtype=torch.float64)
    method.aggregate(jac, losses)
    torch.testing.assert_close(check_buffer(method, losses), torch.stack([gamma, 1 - gamma]), rtol=1e-6, atol=1e-7)


def test_pcgrad_heads_get_their_coefficient_in_the_summed_projections() -> None:
    # Two conflicting tasks (the visiting order is then fixed): g1' = g1 - (g1.g2 / |g2|^2) g2 and
    # g2' = g2 - (g1.g2 / |g1|^2) g1, so g1' + g2' = (1 - g1.g2 / |g1|^2) g1 + (1 - g1.g2 / |g2|^2) g2. The official
    # code projects the gradients of all variables, so task t's head gets that coefficient of g_t.
    g1 = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    g2 = torch.tensor([-2.0, 0.3, 1.0], dtype=torch.float64)
    dot = g1 @ g2
    assert dot < 0
    method = PCGrad(2)
    method.generator = torch.Generator().manual_seed(0)
    losses = torch.ones(2, dtype=torch.float64)
    method.aggregate(torch.stack([g1, g2]), losses)
    expected = torch.stack([1 - dot / (g1 @ g1), 1 - dot / (g2 @ g2)])
    torch.testing.assert_close(check_buffer(method, losses), expected, rtol=1e-6, atol=0)
    # Without conflict nothing is projected: every head gets its raw gradient.
    method.aggregate(torch.stack([g1, g1 + 0.1]), losses)
    torch.testing.assert_close(check_buffer(method, losses), torch.ones(2, dtype=torch.float64))
