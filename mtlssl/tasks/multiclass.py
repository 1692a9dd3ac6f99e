"""Single-label classification over ``num_outputs`` classes: cross-entropy, accuracy and macro-F1."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from mtlssl.tasks.base import Task


class Multiclass(Task):
    """Targets are class ids [B] (``-1`` marks a missing label). ``macro_f1`` is torchmetrics' macro average,
    which leaves out classes absent from both targets and predictions."""

    kind = "multiclass"
    directions = {"accuracy": True, "macro_f1": True}
    min_outputs = 2

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
