"""Small T x T problems on the Gramian G = J J^T, shared by the gradient-balancing methods.

Every method here reduces the Jacobian J [T, P] (P can be millions) to its Gramian G [T, T] once, and solves
for the T task weights in float64 numpy on the CPU; the direction is then ``weights @ J`` on the Jacobian's
device. Nothing P x P is ever formed.

The quadratic programs are solved with ``daqp`` (Arnstrom, Bemporad & Axehill, IEEE TAC 2022; MIT licence), a
dual active-set method like Goldfarb & Idnani's in quadprog (the solver torchjd uses for UPGrad/DualProj): it
finishes in finitely many steps at the exact optimum of a dense strictly convex QP, to float64 round-off.
Its proximal mode for singular Hessians is turned off (``eps_prox=0``), so that the answer is the exact
optimum of a known problem, and its primal feasibility tolerance is tightened from 1e-6 to 1e-12, so that the
constraints hold to round-off as with quadprog. A Frank-Wolfe iteration (the official MGDA code) only
approaches the optimum at rate O(1/k) and stops at a tolerance, and scipy's generic SLSQP is both heavier and
looser. The Hessian must be positive definite, so a relative jitter (1e-12 of the mean diagonal) is added to
the trace-normalised Gramian and raised only when daqp reports a failure (a singular or slightly indefinite
float32 Gramian); it moves the objective by at most that much and never changes the solutions of the tests'
well-posed problems. On those, the solutions equal quadprog's to ~1e-15 (``scripts/bench_solvers.py``).
"""

from __future__ import annotations

import daqp
import numpy as np
import torch
from torch import Tensor

_JITTERS = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4)
# Columns of the Jacobian widened to float64 at a time in ``gramian(..., float64=True)``: 2^21 elements (16 MiB).
_GRAM_CHUNK = 2**21
# daqp's exact mode: no proximal regularisation, and constraints met to round-off (its default tolerance is 1e-6).
_DAQP_SETTINGS = {"eps_prox": 0.0, "primal_tol": 1e-12}
_EQUALITY = 5  # daqp's sense flag of an equality constraint


def gramian(jacobian: Tensor, float64: bool = False) -> np.ndarray:
    """G = J J^T in float64 numpy. By default the product runs in the Jacobian's dtype on its device (casting a
    [T, P] Jacobian to float64 would double its memory); only the small [T, T] result is moved and widened.

    ``float64=True`` accumulates the product in float64, a bounded slice of columns at a time: a product of two
    float32 numbers is exact in float64, so G is then the exact Gramian of the given Jacobian up to float64
    round-off. A float32 product is only accurate to ~1e-7 of tr(G), so it can be indefinite and cannot tell
    a combination of norm ~3e-4 ||g|| from 0 (CAGrad needs that when 0 is nearly in the convex hull).
    """
    jacobian = jacobian.detach()
    if float64 and jacobian.dtype != torch.float64:
        t = jacobian.shape[0]
        g = torch.zeros(t, t, dtype=torch.float64, device=jacobian.device)
        for chunk in jacobian.split(max(1, _GRAM_CHUNK // max(t, 1)), dim=1):
            wide = chunk.double()
            g += wide @ wide.T
    else:
        g = jacobian @ jacobian.T
    g = g.to(device="cpu", dtype=torch.float64).numpy()
    return (g + g.T) / 2.0


def _normalized(gram: np.ndarray) -> tuple[np.ndarray, float]:
    """G / tr(G) and tr(G) (NaN if an entry of G is not finite). The problems here are invariant to a positive
    scaling of G; normalising makes the jitter relative and keeps the solver's arithmetic in a fixed range."""
    gram = np.asarray(gram, dtype=np.float64)
    gram = (gram + gram.T) / 2.0
    trace = float(np.trace(gram)) if np.all(np.isfinite(gram)) else float("nan")
    if not np.isfinite(trace):  # any inf/NaN entry: the callers return NaN weights
        return gram, trace
    return (gram / trace if trace > 0 else np.zeros_like(gram)), trace


class GramianQP:
    """min 1/2 x^T (G + jitter I) x + f^T x subject to x >= lower, and sum(x) = 1 if ``simplex``, for one G and
    any f and lower: the QPs of MGDA, CAGrad, UPGrad and DualProj.

    One daqp workspace is set up per Gramian, so several QPs on the same G (UPGrad's T projections, CAGrad's
    search) share its factorisation, each solve warm-started from the last active set. When daqp reports a
    failure (G + jitter I singular or indefinite to its tolerances), the jitter is raised and the workspace set
    up again; later solves keep the raised jitter.
    """

    def __init__(self, gram: np.ndarray, simplex: bool) -> None:
        self.gram = np.ascontiguousarray(gram, dtype=np.float64)
        t = self.gram.shape[0]
        # The jitter's unit, the mean diagonal (np.mean costs more than the solve at this size).
        self.scale = max(float(np.trace(self.gram)) / t, np.finfo(np.float64).tiny)
        self.simplex = simplex
        self.constraints = np.ones((1, t)) if simplex else np.zeros((0, t))
        self.upper = np.full(t + simplex, np.inf)
        self.sense = np.zeros(t + simplex, dtype=np.int32)
        if simplex:  # the one general constraint: 1 <= sum(x) <= 1
            self.upper[-1] = 1.0
            self.sense[-1] = _EQUALITY
        self.level = 0  # index into _JITTERS
        self.model: daqp.Model | None = None

    def _setup(self, linear: np.ndarray, bounds: np.ndarray) -> daqp.Model | None:
        hessian = self.gram.copy()
        hessian.flat[:: len(hessian) + 1] += _JITTERS[self.level] * self.scale
        model = daqp.Model()
        model.settings = _DAQP_SETTINGS  # before setup, which factorises H under these settings
        flag, _ = model.setup(hessian, linear, self.constraints, self.upper, bounds, self.sense.copy())
        return model if flag >= 0 else None  # < 0: H is not positive definite to daqp's tolerance

    def solve(self, linear: np.ndarray, lower: np.ndarray) -> np.ndarray:
        linear = np.asarray(linear, dtype=np.float64)
        bounds = np.append(lower, 1.0) if self.simplex else np.asarray(lower, dtype=np.float64)
        if self.model is not None:
            self.model.update(f=linear, blower=bounds)
        while True:
            if self.model is None:
                self.model = self._setup(linear, bounds)
            if self.model is not None:
                x, _, flag, _ = self.model.solve()
                if flag > 0 and np.isfinite(x.sum()):
                    return x
                self.model = None
            if self.level + 1 == len(_JITTERS):
                raise ValueError(f"the QP solver failed on this Gramian (daqp exit flag {flag}; non-finite gradients?)")
            self.level += 1  # float32 Gramians can be singular or slightly indefinite: raise the jitter only if needed


def simplex_qp(gram: np.ndarray, linear: np.ndarray, qp: GramianQP | None = None) -> np.ndarray:
    """argmin_{w in simplex} 1/2 w^T G w + linear^T w; ``qp`` is a workspace on the same G to reuse."""
    qp = qp if qp is not None else GramianQP(gram, simplex=True)
    w = np.maximum(qp.solve(linear, np.zeros(len(linear))), 0.0)  # remove round-off below zero
    return w / w.sum()


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """argmin_{w in simplex} w^T G w: the weights of the min-norm point of the convex hull of the rows of J
    (Sener & Koltun 2018, MGDA). Uniform weights when G = 0 (every point of the hull is 0)."""
    gram, trace = _normalized(gram)
    t = gram.shape[0]
    if not np.isfinite(trace):  # inf/NaN gradients (e.g. an AMP overflow): a NaN direction, for the caller to skip
        return np.full(t, np.nan)
    if trace <= 0 or t == 1:
        return np.full(t, 1.0 / t)
    return simplex_qp(gram, np.zeros(t))


def project_onto_dual_cone(gram: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Weights v with J^T v = the projection of J^T u onto the dual cone {x : J x >= 0}.

    By Quinton & Rey (2024, "Jacobian Descent for Multi-Objective Optimization", Prop. 1) this is the dual QP
        min_v v^T G v  subject to  v >= u,
    whose KKT conditions are v >= u, G v >= 0 (so J^T v has a non-negative inner product with every row)
    and (v - u)_t (G v)_t = 0. ``u`` may be [T] or [K, T] (K projections sharing one workspace).
    """
    gram, trace = _normalized(gram)
    u = np.asarray(u, dtype=np.float64)
    if not np.isfinite(trace):
        return np.full(u.shape, np.nan)
    if trace <= 0:  # G = 0: every v >= u is optimal; the smallest one, max(u, 0), as torchjd's ridge gives
        return np.maximum(u, 0.0)
    qp = GramianQP(gram, simplex=False)
    rows = np.atleast_2d(u)
    out = np.stack([qp.solve(np.zeros(len(row)), row) for row in rows])
    out = np.maximum(out, rows)  # round-off: the constraint v >= u holds exactly
    return out.reshape(u.shape)


def cagrad_dual(gram: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    """The solution of CAGrad's dual (Liu et al., NeurIPS 2021): w in the simplex and the multiplier lambda of
    the direction d = g0 + lambda g_w, with

        w = argmin_{w in simplex} g_w^T g0 + sqrt(phi) ||g_w||,   sqrt(phi) = c ||g0||,   lambda = sqrt(phi) / ||g_w||.

    Solved exactly rather than with SLSQP: for lambda > 0 let w(lambda) solve the QP
    min_{simplex} g_w^T g0 + lambda/2 ||g_w||^2. Its KKT conditions are those of the problem above exactly when
    f(lambda) = lambda ||g_{w(lambda)}|| - sqrt(phi) = 0, and since that problem is convex, any root gives its
    minimum. f is continuous, f <= 0 at sqrt(phi) / max_t ||g_t|| (as ||g_w|| <= max_t ||g_t||) and f >= 0 at
    sqrt(phi) / min-norm. The search steps up from the low end by factors of 10 to the first sign change and
    bisects there on log(lambda) to ~1e-13, each step one QP on the same daqp workspace. Stepping up rather than
    testing the top of the bracket matters when 0 is in the convex hull up to round-off: there ||g_w||
    reaches the round-off floor and f falls back below 0 at large lambda although a root lies far below.
    If f stays <= 0 up to the cap (1e9 / max_t ||g_t||, for a min-norm value of 0: the dual's minimum is
    g_w = 0), the capped solution is returned; its step lambda ||g_w|| is then below sqrt(phi).
    Returns (mean, 0) when c = 0 or G = 0 (d = g0) and NaNs for a non-finite G.
    """
    gram, trace = _normalized(gram)  # w and lambda are invariant to scaling G
    t = gram.shape[0]
    mean = np.full(t, 1.0 / t)
    if not np.isfinite(trace):  # inf/NaN gradients: NaN weights, for the caller to skip the step
        return np.full(t, np.nan), float("nan")
    radius = c * np.sqrt(max(mean @ gram @ mean, 0.0))  # sqrt(phi) = c ||g0||
    if trace <= 0 or radius <= 0:
        return mean, 0.0
    qp = GramianQP(gram, simplex=True)
    g_g0 = gram @ mean  # the linear term: g_w^T g0 = w^T G 1/T

    def solve(lam: float) -> tuple[np.ndarray, float]:
        w = simplex_qp(gram, g_g0 / lam, qp)  # (1/lam) * [g_w^T g0 + lam/2 ||g_w||^2]
        return w, float(np.sqrt(max(w @ gram @ w, 0.0)))

    s_max = float(np.sqrt(np.max(np.diag(gram))))
    w_min = min_norm_weights(gram)
    s_min = float(np.sqrt(max(w_min @ gram @ w_min, 0.0)))
    cap = np.log(radius / max(s_min, 1e-9 * s_max))
    lo = np.log(radius / s_max)
    w, s = solve(float(np.exp(lo)))
    if np.exp(lo) * s >= radius:  # the root is the low end itself (the longest gradient is the solution)
        return w, radius / s
    step = np.log(10.0)
    for _ in range(int(np.ceil((cap - lo) / step)) + 1):  # step up to the first sign change
        hi = min(lo + step, cap)
        w, s = solve(float(np.exp(hi)))
        if np.exp(hi) * s > radius:
            break
        if hi >= cap:  # no root below the cap: 0 is in the hull, keep the capped solution
            return w, float(np.exp(hi))
        lo = hi
    for _ in range(200):
        if hi - lo <= 1e-13:
            break
        mid = (lo + hi) / 2
        w_mid, s_mid = solve(float(np.exp(mid)))
        if np.exp(mid) * s_mid > radius:
            hi, w, s = mid, w_mid, s_mid
        else:
            lo = mid
    return w, radius / s  # the exact multiplier for the w found: its step has norm exactly sqrt(phi)


def cagrad_weights(gram: np.ndarray, c: float) -> np.ndarray:
    """The weights 1/T + lambda w of the raw task gradients in CAGrad's direction g0 + lambda g_w (see
    ``cagrad_dual``), before any rescaling."""
    w, lam = cagrad_dual(gram, c)
    return np.full(len(w), 1.0 / len(w)) + lam * w


def nash_weights(
    gram: np.ndarray, init: np.ndarray | None = None, max_iter: int = 20, tol: float = 1e-10
) -> tuple[np.ndarray, bool]:
    """alpha > 0 with G alpha = 1 / alpha (Navon et al., ICML 2022, Nash-MTL's bargaining solution).

    G alpha - 1/alpha is the gradient of f(alpha) = 1/2 alpha^T G alpha - sum_t log alpha_t, which is
    strictly convex on alpha > 0, so the solution is its unique minimiser (it exists unless 0 is in the
    convex hull of the gradients, where f is unbounded below). f is self-concordant, so damped Newton
    (step 1 / (1 + decrement)) converges from any positive start, never leaves alpha > 0, and is quadratic
    near the solution: this replaces the official code's sequence of cvxpy problems. Returns the last
    iterate and whether max_t |alpha_t (G alpha)_t - 1| <= tol was reached within ``max_iter`` steps.
    A task with an exactly zero gradient (0 is then in the hull) gets alpha_t = 0 and the others are solved
    without it: its gradient adds nothing to d whatever alpha_t is.
    """
    gram = np.asarray(gram, dtype=np.float64)
    t, diag = gram.shape[0], np.diag(gram)
    active = diag > 0
    if not active.all():  # a zero gradient (e.g. a task absent from the batch) cannot bargain: alpha_t = 0
        alpha = np.zeros(t)
        if not active.any():
            return alpha, False
        sub_init = None if init is None else np.asarray(init, dtype=np.float64)[active]
        alpha[active], converged = nash_weights(gram[np.ix_(active, active)], sub_init, max_iter, tol)
        return alpha, converged
    # Default start, and for any non-positive entry of ``init``: the exact solution when the gradients are
    # orthogonal, alpha_t = 1 / ||g_t||.
    alpha = 1.0 / np.sqrt(diag)
    if init is not None:
        init = np.asarray(init, dtype=np.float64)
        alpha = np.where(init > 0, init, alpha)
    quad = alpha @ gram @ alpha
    if quad > 0:  # best scale of the start: min_s f(s alpha) is at s^2 alpha^T G alpha = T
        alpha *= np.sqrt(t / quad)
    for _ in range(max_iter):
        g_alpha = gram @ alpha
        if np.max(np.abs(alpha * g_alpha - 1.0)) <= tol:
            return alpha, True
        grad = g_alpha - 1.0 / alpha
        try:
            step = np.linalg.solve(gram + np.diag(1.0 / alpha**2), -grad)
        except np.linalg.LinAlgError:  # no solution (0 in the hull): alpha ran off to infinity
            break
        decrement = float(np.sqrt(max(-grad @ step, 0.0)))
        new = alpha + (step if decrement < 0.25 else step / (1.0 + decrement))
        if not np.all(np.isfinite(new)) or np.any(new <= 0):  # round-off only; the theory keeps alpha > 0
            break
        alpha = new
    return alpha, bool(np.max(np.abs(alpha * (gram @ alpha) - 1.0)) <= tol)


def combine(weights: np.ndarray, jacobian: Tensor) -> tuple[Tensor, Tensor]:
    """The direction weights @ J [P] and the weights [T], both in the Jacobian's dtype on its device."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float64)).to(device=jacobian.device, dtype=jacobian.dtype)
    return w @ jacobian, w
