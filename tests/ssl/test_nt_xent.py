import math

import pytest
import torch
import torch.nn.functional as F

from mtlssl.ssl import SimCLR, nt_xent


def nt_xent_by_formula(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """The SimCLR paper's loss written out: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t),
    averaged over all 2N anchors, s the cosine similarity."""
    z = torch.cat([z1, z2]).double()
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        sims = [F.cosine_similarity(z[i], z[k], dim=0).item() / t for k in range(2 * n)]
        denominator = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -math.log(math.exp(sims[j]) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("n,d,t", [(2, 3, 0.5), (5, 8, 0.1), (8, 4, 1.0)])
def test_nt_xent_matches_the_formula(n: int, d: int, t: float) -> None:
    g = torch.Generator().manual_seed(n * d)
    z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    assert nt_xent(z1, z2, t).item() == pytest.approx(nt_xent_by_formula(z1, z2, t), rel=1e-5)


def test_nt_xent_is_low_when_views_agree_and_scale_free() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 32, generator=g)
    aligned = nt_xent(z, 3.0 * z, 0.1)  # cosine similarity ignores the scale
    shuffled = nt_xent(z, z[torch.randperm(16, generator=g)], 0.1)
    assert aligned < shuffled
    assert aligned.item() == pytest.approx(nt_xent(z, z, 0.1).item(), rel=1e-5)


def test_nt_xent_gradient_flows_and_bad_input_is_refused() -> None:
    z1 = torch.randn(4, 3, requires_grad=True)
    nt_xent(z1, torch.randn(4, 3), 0.5).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z1, z1, 0.0)
    with pytest.raises(ValueError, match="shape"):
        nt_xent(z1, torch.randn(5, 3), 0.5)


def test_simclr_projects_both_views() -> None:
    method = SimCLR(in_dim=6, hidden_dim=8, out_dim=4, temperature=0.5)
    features = torch.randn(10, 6)  # 5 images x 2 views, stacked view-major
    z1, z2 = method.projector(features).chunk(2)
    assert method.loss(features).item() == pytest.approx(nt_xent(z1, z2, 0.5).item(), rel=1e-6)
