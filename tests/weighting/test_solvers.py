"""The T x T solvers behind the gradient-balancing methods, against their defining conditions."""

import itertools

import numpy as np
import pytest
import torch

from mtlssl.weighting import solvers

CASES = [(t, p, seed) for seed, (t, p) in enumerate(itertools.product(range(2, 7), (3, 10, 50)))]


def random_gram(t: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(t, p)) * np.exp(rng.normal(size=(t, 1)))  # gradient norms differ by ~e^2
    return jac, jac @ jac.T


def simplex_grid(steps: int) -> np.ndarray:
    a, b = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = a + b <= steps
    a, b = a[keep], b[keep]
    return np.stack([a, b, steps - a - b], axis=1) / steps


@pytest.mark.parametrize(("t", "p", "seed"), CASES)
def test_min_norm_weights_satisfy_the_simplex_kkt_conditions(t: int, p: int, seed: int) -> None:
    _, gram = random_gram(t, p, seed)
    w = solvers.min_norm_weights(gram)
    assert w.shape == (t,) and np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
    value, grad = w @ gram @ w, gram @ w
    tol = 1e-9 * np.trace(gram)
    # Optimality of min w^T G w on the simplex: (G w)_t >= w^T G w, with equality on the support of w.
    assert np.all(grad >= value - tol)
    assert np.allclose(grad[w > 1e-6], value, atol=tol)


def test_min_norm_weights_match_the_closed_form_for_two_gradients() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        g1, g2 = rng.normal(size=(2, 7)) * rng.uniform(0.1, 10, size=(2, 1))
        gamma = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)  # Sener & Koltun, Algorithm 1
        w = solvers.min_norm_weights(np.stack([g1, g2]) @ np.stack([g1, g2]).T)
        assert w == pytest.approx([gamma, 1 - gamma], abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_min_norm_weights_beat_a_fine_simplex_grid(seed: int) -> None:
    _, gram = random_gram(3, 4, seed)
    grid = simplex_grid(300)
    grid_values = np.einsum("ki,ij,kj->k", grid, gram, grid)
    w = solvers.min_norm_weights(gram)
    assert w @ gram @ w <= grid_values.min() + 1e-12
    # ... and the grid's best point is close to it (the grid spacing bounds the gap).
    assert np.abs(grid[grid_values.argmin()] - w).max() < 0.05


def test_min_norm_weights_on_degenerate_gramians() -> None:
    assert solvers.min_norm_weights(np.zeros((3, 3))) == pytest.approx(np.full(3, 1 / 3))
    g = np.array([[1.0, 2.0, 0.5]])
    jac = np.concatenate([g, g, -g])  # singular G, and 0 is in the hull
    w = solvers.min_norm_weights(jac @ jac.T)
    assert np.linalg.norm(w @ jac) < 1e-6 and w[2] == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(("t", "p", "seed"), CASES)
def test_dual_cone_projection_is_the_projection(t: int, p: int, seed: int) -> None:
    jac, gram = random_gram(t, p, seed)
    rng = np.random.default_rng(100 + seed)
    u = rng.uniform(0, 1, size=t)
    v = solvers.project_onto_dual_cone(gram, u)
    scale = np.trace(gram) * np.abs(v).sum()
    # KKT of min v^T G v s.t. v >= u: feasibility, G v >= 0, complementary slackness.
    assert np.all(v >= u)
    assert np.all(gram @ v >= -1e-9 * scale)
    assert np.allclose((v - u) * (gram @ v), 0, atol=1e-9 * scale)
    # Quinton & Rey, Prop. 1: J^T v is the Euclidean projection of J^T u onto {x : J x >= 0}, so for every y in
    # the cone, (J^T u - J^T v) . (y - J^T v) <= 0 (the variational inequality of a projection).
    x, target = v @ jac, u @ jac
    ys = rng.normal(size=(4000, p)) * np.linalg.norm(target)
    ys = ys[np.all(ys @ jac.T >= 0, axis=1)]
    assert np.all((ys - x) @ (target - x) <= 1e-8 * np.linalg.norm(target) ** 2)
    # Batched rows give the same answers.
    both = solvers.project_onto_dual_cone(gram, np.stack([u, 2 * u]))
    assert np.allclose(both, [v, 2 * v], atol=1e-9 * np.abs(v).max())


def test_dual_cone_projection_keeps_a_vector_already_in_the_cone() -> None:
    jac = np.array([[1.0, 0.2, 0.0], [0.3, 1.0, 0.1], [0.0, 0.4, 1.0]])  # all inner products >= 0
    u = np.array([0.2, 0.5, 0.3])
    assert solvers.project_onto_dual_cone(jac @ jac.T, u) == pytest.approx(u, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_cagrad_weights_solve_the_dual_against_a_simplex_grid(seed: int) -> None:
    _, gram = random_gram(3, 5, seed)
    c = 0.5
    mean = np.full(3, 1 / 3)
    radius = c * np.sqrt(mean @ gram @ mean)
    weights = solvers.cagrad_weights(gram, c)
    lam = weights.sum() - 1.0
    w = (weights - mean) / lam
    assert np.all(w >= -1e-12) and w.sum() == pytest.approx(1.0)
    assert lam * np.sqrt(w @ gram @ w) == pytest.approx(radius, rel=1e-9)  # sqrt(phi) / ||g_w|| exactly

    def objective(x: np.ndarray) -> np.ndarray:  # g_w . g0 + sqrt(phi) ||g_w||
        return x @ gram @ mean + radius * np.sqrt(np.einsum("ki,ij,kj->k", x, gram, x))

    assert objective(w[None])[0] <= objective(simplex_grid(300)).min() + 1e-12


@pytest.mark.parametrize(("t", "p", "seed"), CASES)
def test_cagrad_weights_satisfy_the_simplex_kkt_conditions(t: int, p: int, seed: int) -> None:
    _, gram = random_gram(t, p, seed)
    mean = np.full(t, 1 / t)
    radius = 0.5 * np.sqrt(mean @ gram @ mean)
    weights = solvers.cagrad_weights(gram, 0.5)
    w = (weights - mean) / (weights.sum() - 1.0)
    norm = np.sqrt(w @ gram @ w)
    if norm < 1e-6 * np.sqrt(np.trace(gram)):  # 0 is in the hull (T > P): the objective is not smooth there
        return
    # Gradient of g_w . g0 + sqrt(phi) ||g_w||: at least its value on the support, where it is constant.
    grad = gram @ mean + radius * gram @ w / norm
    low, tol = grad[w > 1e-7].min(), 1e-8 * np.trace(gram)
    assert np.all(grad >= low - tol) and np.allclose(grad[w > 1e-7], low, atol=tol)


def test_cagrad_weights_with_c_zero_are_the_mean() -> None:
    _, gram = random_gram(4, 6, 0)
    assert np.array_equal(solvers.cagrad_weights(gram, 0.0), np.full(4, 0.25))


@pytest.mark.parametrize(("t", "p", "seed"), [c for c in CASES if c[0] <= c[1]])
def test_nash_weights_solve_the_bargaining_condition(t: int, p: int, seed: int) -> None:
    _, gram = random_gram(t, p, seed)
    gram = gram / np.linalg.norm(gram)
    alpha, converged = solvers.nash_weights(gram, max_iter=100)
    assert converged and np.all(alpha > 0)
    assert gram @ alpha == pytest.approx(1 / alpha, rel=1e-9)
    # Warm-started from the answer, it stops at once.
    assert solvers.nash_weights(gram, init=alpha, max_iter=1)[1]


def test_nash_weights_without_a_solution_stop_cleanly() -> None:
    jac = np.array([[1.0, 2.0], [-1.0, -2.0]])  # g and -g: 0 is in the hull, G alpha = 1/alpha has no solution
    alpha, converged = solvers.nash_weights(jac @ jac.T, max_iter=50)
    assert not converged and np.all(np.isfinite(alpha)) and np.all(alpha > 0)
    assert np.linalg.norm(alpha @ jac) < 1e-3 * np.linalg.norm(alpha)


def test_gramian_and_combine_keep_dtype_and_device() -> None:
    jac = torch.randn(3, 20)
    gram = solvers.gramian(jac)
    assert gram.dtype == np.float64 and np.allclose(gram, (jac @ jac.T).double().numpy(), rtol=1e-6)
    direction, weights = solvers.combine(np.array([0.2, 0.3, 0.5]), jac)
    assert direction.dtype == weights.dtype == torch.float32 and direction.shape == (20,)
    assert torch.allclose(direction, 0.2 * jac[0] + 0.3 * jac[1] + 0.5 * jac[2])


def test_non_finite_gramians_give_nan_weights_instead_of_errors() -> None:
    gram = np.array([[1.0, np.nan], [np.nan, 2.0]])
    assert np.isnan(solvers.min_norm_weights(gram)).all()
    assert np.isnan(solvers.project_onto_dual_cone(gram, np.array([0.5, 0.5]))).all()
    assert np.isnan(solvers.cagrad_weights(gram, 0.5)).all()


@pytest.mark.parametrize("name", ["mgda", "cagrad", "nash_mtl", "upgrad", "dualproj"])
def test_every_qp_method_works_without_quadprog(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    # A plain install has no quadprog (GPLv2+): every method must work without it.
    import builtins
    import sys

    from mtlssl import weighting

    real_import = builtins.__import__

    def no_quadprog(module: str, *args: object, **kwargs: object) -> object:
        if module == "quadprog":
            raise ImportError("No module named 'quadprog'")
        return real_import(module, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "quadprog", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_quadprog)
    jac = torch.tensor([[1.0, 0.0, 0.5], [-0.5, 1.0, 0.0], [0.2, -1.0, 1.0]])
    d = weighting.get(name, 3).aggregate(jac, torch.ones(3))
    assert d.shape == (3,) and torch.isfinite(d).all() and d.norm() > 0


@pytest.mark.parametrize(("t", "p", "seed"), CASES)
def test_simplex_qp_with_a_linear_term_matches_scipy_and_its_kkt_conditions(t: int, p: int, seed: int) -> None:
    # The QP under MGDA and CAGrad, argmin_{simplex} 1/2 w^T G w + f^T w, against scipy's SLSQP (an independent
    # solver) and its KKT conditions: (G w + f)_t >= mu everywhere, with equality on the support of w.
    minimize = pytest.importorskip("scipy.optimize").minimize

    _, gram = random_gram(t, p, seed)
    gram = gram / np.trace(gram)
    linear = np.random.default_rng(seed).normal(size=t) * 0.1
    w = solvers.min_norm_weights(gram) if seed % 3 == 0 else solvers.simplex_qp(gram, linear)
    f = np.zeros(t) if seed % 3 == 0 else linear
    grad = gram @ w + f
    mu = grad[w > 1e-9].min()
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(grad >= mu - 1e-10) and np.allclose(grad[w > 1e-9], mu, atol=1e-10)
    res = minimize(lambda x: 0.5 * x @ gram @ x + f @ x, np.full(t, 1 / t), jac=lambda x: gram @ x + f,
                   bounds=[(0, 1)] * t, constraints={"type": "eq", "fun": lambda x: x.sum() - 1}, method="SLSQP",
                   options={"ftol": 1e-15, "maxiter": 500})
    value = 0.5 * w @ gram @ w + f @ w
    assert value <= res.fun + 1e-12  # never worse than SLSQP...
    assert value == pytest.approx(res.fun, abs=1e-8)  # ... and the same optimum
