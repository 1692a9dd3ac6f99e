"""Scores: per-task metrics of a split, and kNN / linear-probe accuracy of frozen features.

Every function skips items whose label is missing and returns plain Python floats (NaN where
the score is undefined, e.g. no labelled item).
"""

from mtlssl.metrics.knn import knn_accuracy
from mtlssl.metrics.linear_probe import linear_probe_accuracy
from mtlssl.metrics.task_metrics import is_better, task_metrics

__all__ = ["is_better", "knn_accuracy", "linear_probe_accuracy", "task_metrics"]
