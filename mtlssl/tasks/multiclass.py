"""Single-label classification over ``num_outputs`` classes: cross-entropy, accuracy and macro-F1."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from mtlssl.errors import UserError
from mtlssl.tasks.base import Task, parse_number
from mtlssl.tasks.spec import TaskSpec


class Multiclass(Task):
    """Targets are class ids [B] (``-1`` marks a missing label). ``macro_f1`` is torchmetrics' macro average,
    which leaves out classes absent from both targets and predictions."""

    kind = "multiclass"
    directions = {"accuracy": True, "macro_f1": True}
    min_outputs = 2

    one_column = True

    @classmethod
    def spec_from_columns(cls, name: str, columns: Sequence[str], num_outputs: int | None) -> TaskSpec:
        if len(columns) != 1:
            return super().spec_from_columns(name, columns, num_outputs)  # one column: its message
        if num_outputs is None:
            raise UserError("num_outputs is missing: give the number of classes (labels are 0..K-1)")
        return TaskSpec(name, cls.kind, num_outputs)

    def parse_text(self, text: str) -> tuple[float | None, str]:
        """A class id; "2.0" is accepted: pandas writes integer columns with gaps as floats."""
        value = parse_number(text)
        if value is None or not value.is_integer():
            return None, f"'{text}' is not an integer class id"
        if not 0 <= value < self.num_outputs:
            return None, f"class id {text} is out of range 0..{self.num_outputs - 1}"
        return value, ""

    @property
    def text_fix(self) -> str:
        return f"use an integer 0..{self.num_outputs - 1} or leave the cell empty for a missing label"

    def missing_row(self, width: int) -> list[float]:
        return [-1.0]

    def target_tensor(self, values: Tensor) -> Tensor:
        return values[:, 0].long()

    def valid(self, target: Tensor) -> Tensor:
        return target >= 0

    def _loss(self, output: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.cross_entropy(output, target.long(), reduction=reduction)

    def _loss_terms(self, output: Tensor) -> int:
        return output.shape[0]

    def predict(self, output: Tensor) -> Tensor:
        return output.float().softmax(dim=1)

    @property
    def num_classes(self) -> int:
        return self.num_outputs

    def class_labels(self, target: Tensor) -> Tensor:
        return target.long()

    def _scorers(self) -> dict[str, Metric]:
        return {"accuracy": MulticlassAccuracy(self.num_outputs, average="micro"),
                "macro_f1": MulticlassF1Score(self.num_outputs, average="macro")}

    def _update_scorers(self, scorers: dict[str, Metric], output: Tensor, target: Tensor) -> None:
        probs, target = self.predict(output), target.long()
        for scorer in scorers.values():
            scorer.update(probs, target)
