"""One yes/no label: binary cross-entropy on a logit, accuracy (sigmoid > 0.5) and AUROC."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC

from mtlssl.errors import UserError
from mtlssl.tasks.base import Scores, Task, parse_number
from mtlssl.tasks.spec import TaskSpec


def label_probabilities(output: Tensor) -> Tensor:
    """Sigmoids in float64: in float32 every logit above ~17 becomes exactly 1.0, so confident scores would tie
    and AUROC would lose their ranking."""
    return output.double().sigmoid()


def parse_yes_no(text: str) -> tuple[float | None, str]:
    """A 0/1 cell (or true/false) -> (value, "") or (None, what is wrong)."""
    if text.lower() in ("true", "false"):
        return float(text.lower() == "true"), ""
    value = parse_number(text)
    return (value, "") if value in (0.0, 1.0) else (None, f"'{text}' is not 0 or 1")


class ClassCounts(Metric):
    """Positives and negatives seen per label: AUROC is defined only for a label that has both."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.add_state("positives", torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("negatives", torch.zeros(num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, target: Tensor) -> None:
        self.positives += (target == 1).sum(dim=0)
        self.negatives += (target == 0).sum(dim=0)

    def compute(self) -> Tensor:
        return (self.positives > 0) & (self.negatives > 0)


class YesNoLabels(Task):
    """What binary and multilabel tasks share: 0/1 targets, one logit per label, binary cross-entropy."""

    def parse_text(self, text: str) -> tuple[float | None, str]:
        return parse_yes_no(text)

    def _loss(self, output: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.binary_cross_entropy_with_logits(output, target.reshape(output.shape).float(), reduction=reduction)

    def predict(self, output: Tensor) -> Tensor:
        return output.float().sigmoid()


class Binary(YesNoLabels):
    """Targets are 0/1 [B] or [B, 1] (``NaN`` marks a missing label)."""

    kind = "binary"
    directions = {"accuracy": True, "auroc": True}

    one_column = True

    @classmethod
    def check_spec(cls, spec: TaskSpec) -> None:
        if spec.num_outputs != 1:
            raise UserError(f"task '{spec.name}': a binary task has num_outputs=1 (use multilabel for more)")

    @classmethod
    def spec_from_columns(cls, name: str, columns: Sequence[str], num_outputs: int | None) -> TaskSpec:
        if len(columns) != 1:
            return super().spec_from_columns(name, columns, num_outputs)  # one column: its message
        return TaskSpec(name, cls.kind, 1 if num_outputs is None else num_outputs)

    @property
    def num_classes(self) -> int:
        return 2

    def class_labels(self, target: Tensor) -> Tensor:
        return target.reshape(-1).nan_to_num(-1).long()

    def _scorers(self) -> dict[str, Metric]:
        return {"accuracy": BinaryAccuracy(threshold=0.5), "auroc": BinaryAUROC(), "classes": ClassCounts(1)}

    def _update_scorers(self, scorers: dict[str, Metric], output: Tensor, target: Tensor) -> None:
        probs, target = label_probabilities(output).reshape(-1), target.reshape(-1).long()
        scorers["accuracy"].update(probs, target)
        scorers["auroc"].update(probs, target)
        scorers["classes"].update(target.view(-1, 1))

    def _compute_scorers(self, scorers: dict[str, Metric]) -> Scores:
        both = bool(scorers["classes"].compute().all())  # torchmetrics would warn and return 0 for one class
        return {"accuracy": float(scorers["accuracy"].compute()),
                "auroc": float(scorers["auroc"].compute()) if both else math.nan}
