"""Several independent yes/no labels per item: binary cross-entropy per label, accuracy and macro AUROC."""

from __future__ import annotations

import math

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import BinaryAUROC, MultilabelAccuracy

from mtlssl.tasks.base import Scores
from mtlssl.tasks.binary import ClassCounts, YesNoLabels, label_probabilities


class Multilabel(YesNoLabels):
    """Targets are 0/1 [B, L]; an item with any label ``NaN`` is missing as a whole.

    ``accuracy`` is the mean over all labels of all items (sigmoid > 0.5); ``auroc`` the mean over the labels
    whose targets hold both classes (NaN when none does): label by label rather than torchmetrics'
    multilabel AUROC, which scores a one-class label as 0 and drags the mean down.
    """

    kind = "multilabel"
    directions = {"accuracy": True, "auroc": True}

    def _scorers(self) -> dict[str, Metric]:
        # micro accuracy = correct entries / all entries: every label has the same item count, so it is also
        # the mean of the per-label accuracies.
        labels = self.num_outputs
        return {"accuracy": MultilabelAccuracy(labels, threshold=0.5, average="micro"),
                **{f"auroc/{j}": BinaryAUROC() for j in range(labels)}, "classes": ClassCounts(labels)}

    def _update_scorers(self, scorers: dict[str, Metric], output: Tensor, target: Tensor) -> None:
        probs = label_probabilities(output)
        target = target.reshape(probs.shape).long()
        scorers["accuracy"].update(probs, target)
        for j in range(self.num_outputs):
            scorers[f"auroc/{j}"].update(probs[:, j], target[:, j])
        scorers["classes"].update(target)

    def _compute_scorers(self, scorers: dict[str, Metric]) -> Scores:
        defined = scorers["classes"].compute().tolist()
        aurocs = [float(scorers[f"auroc/{j}"].compute()) for j, ok in enumerate(defined) if ok]
        return {"accuracy": float(scorers["accuracy"].compute()),
                "auroc": sum(aurocs) / len(aurocs) if aurocs else math.nan}
