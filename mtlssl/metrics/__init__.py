"""Scores of frozen features (kNN and linear-probe accuracy) and multi-task summaries (delta_m, delta_p).

Every function skips items whose label is missing and returns plain Python floats (NaN where the score is
undefined, e.g. no labelled item). Each task's own metrics live with its kind, in ``mtlssl.tasks``.
"""

from mtlssl.metrics.knn import knn_accuracy
from mtlssl.metrics.linear_probe import linear_probe_accuracy

__all__ = ["knn_accuracy", "linear_probe_accuracy"]
