"""Per-task scores of a whole split, and which of two scores is better.

Items whose label is missing (see :mod:`mtlssl.data.tasks`) are left out. A metric that is
undefined on what is left is NaN rather than an error: every metric when no item is labelled,
AUROC when the labelled targets hold one class only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor
from torchmetrics.functional import mean_absolute_error, mean_squared_error
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    multiclass_accuracy,
    multiclass_f1_score,
    multilabel_accuracy,
)

from mtlssl.data.tasks import HIGHER_IS_BETTER, TaskSpec

Scores = dict[str, float]


def task_metrics(spec: TaskSpec, outputs: Tensor, targets: Tensor) -> Scores:
    """Score raw head ``outputs`` [N, num_outputs] against ``targets`` for one task.

    Returns exactly ``spec.metrics``:

    - multiclass: ``accuracy`` (micro) and ``macro_f1`` (torchmetrics' macro average, which leaves
      out classes absent from both targets and predictions);
    - binary: ``accuracy`` (sigmoid > 0.5) and ``auroc``;
    - multilabel: ``accuracy`` (mean over all labels of all items, sigmoid > 0.5) and ``auroc``
      (mean over the labels whose targets hold both classes; NaN when none does). An item with
      any label missing is left out entirely;
    - regression: ``mae`` and ``rmse`` over all target dimensions of all items.

    Every value is NaN when no item is labelled.
    """
    keep = spec.valid(targets)
    if not bool(keep.any()):
        return {name: math.nan for name in spec.metrics}
    outputs, targets = outputs.detach()[keep], targets.detach()[keep]
    scores = _SCORERS[spec.kind](_predictions(spec, outputs), targets, spec.num_outputs)
    return {name: scores[name] for name in spec.metrics}


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


def _predictions(spec: TaskSpec, outputs: Tensor) -> Tensor:
    """``spec.predict``, except that sigmoids are taken in float64: in float32 every logit above
    ~17 becomes exactly 1.0, so confident scores would tie and AUROC would lose their ranking."""
    if spec.kind in ("binary", "multilabel"):
        return outputs.double().sigmoid()
    return spec.predict(outputs)


def _multiclass(probs: Tensor, targets: Tensor, num_classes: int) -> Scores:
    targets = targets.long()
    return {
        "accuracy": multiclass_accuracy(probs, targets, num_classes=num_classes, average="micro").item(),
        "macro_f1": multiclass_f1_score(probs, targets, num_classes=num_classes, average="macro").item(),
    }


def _binary(probs: Tensor, targets: Tensor, num_outputs: int) -> Scores:
    probs, targets = probs.reshape(-1), targets.reshape(-1).long()
    accuracy = binary_accuracy(probs, targets, threshold=0.5)
    return {"accuracy": accuracy.item(), "auroc": _auroc(probs, targets)}


def _multilabel(probs: Tensor, targets: Tensor, num_labels: int) -> Scores:
    targets = targets.reshape(probs.shape).long()
    # micro = correct entries / all entries; every label has the same item count, so this is
    # also the mean of the per-label accuracies.
    accuracy = multilabel_accuracy(probs, targets, num_labels=num_labels, threshold=0.5, average="micro")
    # Label by label rather than multilabel_auroc: that one scores a one-class label as 0 (with a
    # warning) and drags the macro mean down, and refuses a subset of fewer than two labels.
    per_label = [_auroc(probs[:, j], targets[:, j]) for j in range(num_labels)]
    defined = [a for a in per_label if not math.isnan(a)]
    return {"accuracy": accuracy.item(), "auroc": sum(defined) / len(defined) if defined else math.nan}


def _regression(preds: Tensor, targets: Tensor, num_outputs: int) -> Scores:
    # Targets may be [N] for a one-dimensional task; flatten both to score every dimension alike.
    preds, targets = preds.reshape(-1), targets.reshape(preds.shape).reshape(-1).to(preds.dtype)
    return {
        "mae": mean_absolute_error(preds, targets).item(),
        "rmse": mean_squared_error(preds, targets, squared=False).item(),
    }


def _auroc(probs: Tensor, targets: Tensor) -> float:
    """Binary AUROC, NaN when the targets hold one class only (torchmetrics would warn and return 0)."""
    if bool((targets == targets[0]).all()):
        return math.nan
    return binary_auroc(probs, targets).item()


_SCORERS: dict[str, Callable[[Tensor, Tensor, int], Scores]] = {
    "multiclass": _multiclass,
    "binary": _binary,
    "multilabel": _multilabel,
    "regression": _regression,
}
