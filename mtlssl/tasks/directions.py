"""Which way each metric improves, for model selection, delta_m and summaries (by metric name alone, so a
metrics.json can be read without its tasks)."""

from __future__ import annotations

import math

from mtlssl.tasks.registry import KINDS


def _directions() -> dict[str, bool]:
    directions: dict[str, bool] = {}
    for cls in KINDS.values():
        for name, higher in cls.directions.items():
            if directions.setdefault(name, higher) != higher:
                raise AssertionError(f"metric {name} has two directions")  # a name means one thing in every kind
    return directions


# Metric name -> higher is better, over every kind's metrics.
HIGHER_IS_BETTER: dict[str, bool] = _directions()


def is_better(metric: str, new: float, old: float) -> bool:
    """Whether ``new`` improves on ``old`` for ``metric`` (a name or a path like "val/shape/accuracy").

    Names not in ``HIGHER_IS_BETTER`` (e.g. "loss") count as lower-is-better. A NaN ``new`` is
    never better; any other ``new`` beats a NaN ``old``, so NaN can stand for "no score yet".
    """
    if math.isnan(new):
        return False
    if math.isnan(old):
        return True
    if HIGHER_IS_BETTER.get(metric.rsplit("/", 1)[-1], False):
        return new > old
    return new < old
