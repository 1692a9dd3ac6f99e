import hydra
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.weighting.imtl_g import IMTLG


def projections(direction: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
    return (jacobian / jacobian.norm(dim=1, keepdim=True)) @ direction


@pytest.mark.parametrize("seed", range(10))
def test_equal_projections_on_every_unit_gradient(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    t = int(torch.randint(2, 7, (1,), generator=gen))
    p = int(torch.randint(max(t, 3), 51, (1,), generator=gen))
    scales = torch.exp(2 * torch.randn(t, 1, generator=gen, dtype=torch.float64))  # very unequal norms
    jacobian = torch.randn(t, p, generator=gen, dtype=torch.float64) * scales
    method = IMTLG(t)
    d = method.aggregate(jacobian, torch.ones(t))
    proj = projections(d, jacobian)
    assert torch.allclose(proj, proj.mean().expand(t), rtol=1e-6, atol=1e-9)
    assert float(method.last_weights.sum()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(method.last_weights.double() @ jacobian, d, rtol=1e-4, atol=1e-6)


def test_hand_computed_two_task_case() -> None:
    # u1 = e1, u2 = e2; d = a g1 + (1 - a) g2 = [a, 2 (1 - a)] with equal components: a = 2/3.
    jacobian = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    method = IMTLG(2)
    assert torch.allclose(method.aggregate(jacobian, torch.ones(2)), torch.tensor([2 / 3, 2 / 3]))
    assert torch.allclose(method.last_weights, torch.tensor([2 / 3, 1 / 3]))


def test_identical_gradients_give_that_gradient() -> None:
    g = torch.randn(1, 12, generator=torch.Generator().manual_seed(1))
    d = IMTLG(4).aggregate(g.repeat(4, 1), torch.ones(4))
    assert not torch.isnan(d).any()
    assert torch.allclose(d, g[0], atol=1e-6)


def test_a_duplicated_task_keeps_the_property() -> None:
    gen = torch.Generator().manual_seed(2)
    rows = torch.randn(3, 20, generator=gen, dtype=torch.float64)
    jacobian = torch.cat([rows, rows[:1]])  # task 4 = task 1: D U^T is singular
    d = IMTLG(4).aggregate(jacobian, torch.ones(4))
    proj = projections(d, jacobian)
    assert torch.allclose(proj, proj.mean().expand(4), rtol=1e-6)


def test_one_task_is_its_gradient() -> None:
    g = torch.randn(1, 5)
    method = IMTLG(1)
    assert torch.allclose(method.aggregate(g, torch.ones(1)), g[0])
    assert torch.equal(method.last_weights, torch.ones(1))


def test_state_round_trip_continues_identically() -> None:
    jacobian = torch.randn(3, 10, generator=torch.Generator().manual_seed(3))
    a = IMTLG(3)
    a.aggregate(jacobian, torch.ones(3))
    b = IMTLG(3)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.aggregate(jacobian, torch.ones(3)), b.aggregate(jacobian, torch.ones(3)))


def test_invalid_task_count() -> None:
    with pytest.raises(UserError, match="at least one task"):
        IMTLG(0)


def test_config_instantiates_and_keeps_float32() -> None:
    method = hydra.utils.instantiate(OmegaConf.load(config_dir() / "weighting" / "imtl_g.yaml"), num_tasks=3)
    assert isinstance(method, IMTLG)
    d = method.aggregate(torch.randn(3, 10), torch.rand(3) + 0.5)
    assert d.dtype == torch.float32 and d.shape == (10,)


def two_task_imtl_g(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """The paper's two-task case in closed form: d = a g1 + (1 - a) g2 with d . (u1 - u2) = 0."""
    du = g1 / g1.norm() - g2 / g2.norm()
    a = -(g2 @ du) / ((g1 - g2) @ du)
    return torch.stack([a, 1 - a])


@pytest.mark.parametrize("zero", range(3))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_zero_gradient_is_left_out_of_the_solve(zero: int, dtype: torch.dtype) -> None:
    # A task with no label in the batch has an exactly zero gradient: it has no direction, so the paper's condition
    # is posed on the other tasks only (as Nash-MTL's bargaining does).
    gen = torch.Generator().manual_seed(10 + zero)
    jacobian = torch.randn(3, 20, generator=gen, dtype=torch.float64) * torch.exp(torch.randn(3, 1, generator=gen))
    jacobian[zero] = 0
    others = [i for i in range(3) if i != zero]
    method = IMTLG(3)
    d = method.aggregate(jacobian.to(dtype), torch.ones(3))
    assert method.last_weights[zero] == 0
    expected = two_task_imtl_g(jacobian[others[0]], jacobian[others[1]])
    tol = 1e-6 if dtype == torch.float64 else 1e-4  # last_weights is float32
    assert torch.allclose(method.last_weights[others].double(), expected, rtol=tol, atol=tol)
    assert torch.allclose(d.double(), expected @ jacobian[others], rtol=tol, atol=tol)
    proj = projections(d.double(), jacobian[others])
    assert torch.allclose(proj[0], proj[1], rtol=tol)
    assert proj[0] > 0.1 * jacobian.norm(dim=1)[others].min()  # not the zero update


def test_one_non_zero_gradient_is_the_direction() -> None:
    jacobian = torch.zeros(3, 6)
    jacobian[1] = torch.randn(6, generator=torch.Generator().manual_seed(4))
    method = IMTLG(3)
    assert torch.allclose(method.aggregate(jacobian, torch.ones(3)), jacobian[1])
    assert torch.equal(method.last_weights, torch.tensor([0.0, 1.0, 0.0]))


def test_an_all_zero_jacobian_gives_a_zero_direction_without_nan() -> None:
    method = IMTLG(3)
    d = method.aggregate(torch.zeros(3, 7), torch.ones(3))
    assert torch.equal(d, torch.zeros(7))
    assert torch.isfinite(method.last_weights).all()
