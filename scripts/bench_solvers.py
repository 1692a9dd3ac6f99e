"""Time per QP solve of daqp (mtlssl's solver) against quadprog (the solver it replaced), side by side.

The QPs are the ones the gradient methods solve, on trace-normalised Gramians G = J J^T of random Jacobians
with unequal row norms (P = 3T, full rank), with the jitter 1e-12 of the mean diagonal that both paths add:
- ``mgda``: the min-norm point of the convex hull, argmin_{simplex} 1/2 w^T G w (one QP per Gramian);
- ``cagrad``: argmin_{simplex} 1/2 w^T G w + (G 1/T)^T w / lambda for 40 lambdas on one G, as CAGrad's root
  search does (one workspace or factorisation per Gramian, shared by its solves);
- ``upgrad``: the T projections onto the dual cone, argmin_{v >= e_i / T} 1/2 v^T (G + 1e-4 I) v, on one G.

quadprog runs as mtlssl did before daqp: one Cholesky factor per Gramian, passed ``factorized``. daqp runs
through ``solvers.GramianQP``, as the methods do now: one workspace per Gramian, later solves warm-started.
The two are timed round-robin in one process; the table gives microseconds per solve (set-up included, shared
over a Gramian's solves), the ratio daqp / quadprog, and the largest difference between their solutions.

    python scripts/bench_solvers.py [--tasks 2 3 5 10 20 40] [--gramians 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version
from types import ModuleType

import numpy as np

from mtlssl.weighting import solvers

JITTER = 1e-12  # of the mean diagonal, as solvers._JITTERS[0]
UPGRAD_REG = 1e-4  # UPGrad's default reg_eps
CAGRAD_LAMBDAS = np.logspace(-1, 2, 40)


def gramians(t: int, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        jac = rng.normal(size=(t, 3 * t)) * np.exp(rng.normal(size=(t, 1)))
        out.append(solvers._normalized(jac @ jac.T)[0])
    return out


def problems(kind: str, gram: np.ndarray) -> tuple[np.ndarray, bool, list[tuple[np.ndarray, np.ndarray]]]:
    """(Hessian before jitter, simplex?, [(linear term, lower bound)]) of one Gramian's QPs."""
    t = len(gram)
    if kind == "mgda":
        return gram, True, [(np.zeros(t), np.zeros(t))]
    if kind == "cagrad":
        g_g0 = gram @ np.full(t, 1.0 / t)
        return gram, True, [(g_g0 / lam, np.zeros(t)) for lam in CAGRAD_LAMBDAS]
    hessian = gram + UPGRAD_REG * np.eye(t)
    return hessian, False, [(np.zeros(t), row) for row in np.eye(t) / t]


def solve_daqp(hessian: np.ndarray, simplex: bool, qps: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    qp = solvers.GramianQP(hessian, simplex=simplex)
    return [qp.solve(linear, lower) for linear, lower in qps]


def solve_quadprog(quadprog: ModuleType, hessian: np.ndarray, simplex: bool,
                   qps: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    t = len(hessian)
    scale = max(float(np.mean(np.diag(hessian))), np.finfo(np.float64).tiny)
    r_inv = np.linalg.inv(np.linalg.cholesky(hessian + JITTER * scale * np.eye(t)).T)
    if simplex:  # sum(w) = 1 (the equality), then w >= 0
        constraints, meq = np.concatenate([np.ones((t, 1)), np.eye(t)], axis=1), 1
        return [quadprog.solve_qp(r_inv, -lin, constraints, np.concatenate([[1.0], low]), meq, True)[0]
                for lin, low in qps]
    return [quadprog.solve_qp(r_inv, -lin, np.eye(t), low, 0, True)[0] for lin, low in qps]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_description() -> str:
    name, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        name = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = " ".join(flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {flag}" in info)
    except (OSError, StopIteration):
        pass
    return f"{name} ({flags}), {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 3, 5, 10, 20, 40])
    parser.add_argument("--gramians", type=int, default=20, help="random Gramians per task count")
    parser.add_argument("--rounds", type=int, default=7, help="round-robin repetitions; the median is printed")
    args = parser.parse_args()
    try:
        import quadprog
    except ImportError:
        quadprog = None
        print("quadprog is not installed: daqp's times only (pip install quadprog for the side-by-side ratio)\n")
    baseline = f"quadprog {version('quadprog')}" if quadprog is not None else "no quadprog"
    print(f"CPU: {cpu_description()}; daqp {version('daqp')}, {baseline}, numpy {np.__version__}\n")
    print("| T | QPs | solves per G | quadprog us/solve | daqp us/solve | daqp / quadprog | max abs diff |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for t in args.tasks:
        grams = gramians(t, args.gramians, seed=t)
        for kind in ("mgda", "cagrad", "upgrad"):
            sets = [problems(kind, g) for g in grams]
            solves = sum(len(qps) for _, _, qps in sets)
            times: dict[str, list[float]] = {"quadprog": [], "daqp": []}
            for _ in range(args.rounds):
                times["daqp"].append(timed(lambda: [solve_daqp(*s) for s in sets]))  # noqa: B023
                if quadprog is not None:
                    times["quadprog"].append(timed(lambda: [solve_quadprog(quadprog, *s) for s in sets]))  # noqa: B023
            d_us = statistics.median(times["daqp"]) / solves * 1e6
            if quadprog is None:
                print(f"| {t} | {kind} | {solves // len(sets)} | | {d_us:.1f} | | |")
                continue
            q_us = statistics.median(times["quadprog"]) / solves * 1e6
            diff = max(float(np.abs(a - b).max()) for s in sets
                       for a, b in zip(solve_daqp(*s), solve_quadprog(quadprog, *s), strict=True))
            ratio = d_us / q_us
            print(f"| {t} | {kind} | {solves // len(sets)} | {q_us:.1f} | {d_us:.1f} | {ratio:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
