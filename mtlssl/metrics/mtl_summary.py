"""Multi-task summaries against single-task baselines.

- delta_m% (Maninis et al., CVPR 2019; used by CAGrad, Nash-MTL, FAMO): the mean over all K metrics of
  ``(-1)^{d_k} (M_mtl,k - M_stl,k) / M_stl,k * 100``, with d_k = 1 when higher is better.
  Lower is better; negative means the multi-task model beats the single-task ones.
- delta_p% (LibMTL): the same signed relative change with the opposite sign, averaged over each task's
  metrics first, then over the tasks. Higher is better; it weighs every task equally, however many
  metrics it has.

Metrics are keyed ``"<task>/<metric>"`` (any prefix such as ``test/`` is dropped); the direction comes
from the metric's name (``mtlssl.tasks.HIGHER_IS_BETTER``). Only metrics present in both inputs,
finite, and with a non-zero baseline count; losses are not metrics here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mtlssl.errors import UserError
from mtlssl.tasks import HIGHER_IS_BETTER


def _task_metric(key: str) -> tuple[str, str]:
    parts = key.split("/")
    return parts[-2], parts[-1]


def relative_changes(mtl: Mapping[str, float], stl: Mapping[str, float]) -> dict[tuple[str, str], float]:
    """``(task, metric) -> signed relative change in %`` (positive: the multi-task model is better)."""
    baseline = {_task_metric(k): v for k, v in stl.items() if len(k.split("/")) >= 2}
    changes = {}
    for key, value in mtl.items():
        if len(key.split("/")) < 2:
            continue
        task, metric = _task_metric(key)
        base = baseline.get((task, metric))
        if metric not in HIGHER_IS_BETTER or base is None or not (math.isfinite(value) and math.isfinite(base)):
            continue
        if base == 0:
            continue  # a relative change from 0 is undefined
        sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        changes[(task, metric)] = sign * (value - base) / abs(base) * 100.0
    if not changes:
        raise UserError("no metric is shared by the multi-task results and the single-task baselines; "
                        "the baselines must be runs on the same data and tasks (one task each)")
    return changes


def delta_m(mtl: Mapping[str, float], stl: Mapping[str, float]) -> float:
    """Maninis et al.'s delta_m% over all shared metrics (lower is better)."""
    changes = relative_changes(mtl, stl)
    return -sum(changes.values()) / len(changes)


def delta_p(mtl: Mapping[str, float], stl: Mapping[str, float]) -> float:
    """LibMTL's delta_p%: per-task mean of the signed relative changes, then the mean over tasks (higher is better)."""
    per_task: dict[str, list[float]] = {}
    for (task, _), change in relative_changes(mtl, stl).items():
        per_task.setdefault(task, []).append(change)
    return sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)
