import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.aligned_mtl import AlignedMTL

EPS32 = torch.finfo(torch.float32).eps


@pytest.mark.parametrize("seed", range(10))
def test_aligned_gradients_are_orthogonal_with_equal_norms(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 7, (1,), generator=gen))
    p = int(torch.randint(max(t, 3), 51, (1,), generator=gen))
    jacobian = torch.randn(t, p, generator=gen, dtype=torch.float64) * torch.exp(torch.randn(t, 1, generator=gen))
    gram = jacobian @ jacobian.T
    b = AlignedMTL.alignment(gram, EPS32)
    sigma_min = torch.linalg.svdvals(jacobian).min()
    # B G B^T = sigma_min^2 I: the rows of B J are orthogonal, each of norm sigma_min (condition number 1).
    assert torch.allclose(b @ gram @ b.T, sigma_min**2 * torch.eye(t, dtype=torch.float64), atol=1e-8)
    aligned = b @ jacobian
    assert torch.linalg.cond(aligned) == pytest.approx(1.0, abs=1e-6)
    method = AlignedMTL(t)
    d = method.aggregate(jacobian, torch.ones(t))
    assert torch.allclose(d, aligned.sum(0), atol=1e-8)  # the aligned gradients, summed
    assert torch.allclose(method.last_weights.double() @ jacobian, d, atol=1e-5)


def test_hand_computed_alignment() -> None:
    # Orthogonal rows of norms 3 and 1: B = diag(1/3, 1), aligned rows e1 and e2, direction [1, 1, 0].
    jacobian = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    method = AlignedMTL(2)
    assert torch.allclose(method.aggregate(jacobian, torch.ones(2)), torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(method.last_weights, torch.tensor([1 / 3, 1.0]))


def test_rank_deficient_jacobian_is_aligned_on_its_subspace() -> None:
    gen = torch.Generator().manual_seed(1)
    rows = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    jacobian = torch.cat([rows, rows[1:2]])  # 4 tasks, rank 3
    gram = jacobian @ jacobian.T
    b = AlignedMTL.alignment(gram, EPS32)
    aligned_gram = b @ gram @ b.T
    assert not torch.isnan(aligned_gram).any()
    # sigma_min^2 times the projector onto the non-degenerate subspace: eigenvalues {0, s, s, s}.
    eig = torch.linalg.eigvalsh(aligned_gram)
    assert eig[0] == pytest.approx(0.0, abs=1e-8)
    assert torch.allclose(eig[1:], eig[1:].mean().expand(3), rtol=1e-8)
    d = AlignedMTL(4).aggregate(jacobian.float(), torch.ones(4))
    assert torch.isfinite(d).all()


def test_identical_gradients_are_summed_and_zero_gives_zero() -> None:
    g = torch.randn(1, 10, generator=torch.Generator().manual_seed(2))
    d = AlignedMTL(3).aggregate(g.repeat(3, 1), torch.ones(3))
    assert torch.allclose(d, 3 * g[0], atol=1e-5)  # B = 11^T / 3, so w = B 1 = 1
    zero = AlignedMTL(3).aggregate(torch.zeros(3, 10), torch.ones(3))
    assert torch.equal(zero, torch.zeros(10))


@pytest.mark.parametrize("mode", ["median", "rmse"])
def test_other_scale_modes_give_the_official_norms(mode: str) -> None:
    jacobian = torch.randn(4, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gram = jacobian @ jacobian.T
    lam = torch.linalg.eigvalsh(gram)
    scale2 = lam.median() if mode == "median" else lam.mean()
    b = AlignedMTL.alignment(gram, EPS32, mode)
    assert torch.allclose(b @ gram @ b.T, scale2 * torch.eye(4, dtype=torch.float64), atol=1e-8)


def test_one_task_is_its_gradient() -> None:
    g = torch.randn(1, 8)
    assert torch.allclose(AlignedMTL(1).aggregate(g, torch.ones(1)), g[0], atol=1e-6)


def test_state_round_trip_continues_identically() -> None:
    jacobian = torch.randn(3, 10)
    a = AlignedMTL(3, scale_mode="rmse")
    a.aggregate(jacobian, torch.ones(3))
    b = AlignedMTL(3, scale_mode="rmse")
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.aggregate(jacobian, torch.ones(3)), b.aggregate(jacobian, torch.ones(3)))


def test_invalid_scale_mode() -> None:
    with pytest.raises(UserError, match="weighting.scale_mode must be one of min, median, rmse"):
        AlignedMTL(2, scale_mode="max")


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "aligned_mtl.yaml"), num_tasks=3)
    assert isinstance(method, AlignedMTL) and method.scale_mode == "min"
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)
