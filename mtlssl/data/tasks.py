"""Task specs: what a task predicts, how it is scored, and how a missing label is marked.

A missing target is marked in the target tensor itself, so batches stay plain tensors:
``-1`` for a multiclass label, ``NaN`` for binary, multilabel and regression targets (every
entry of the item's row). Losses and metrics skip such items rather than fail or count them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlssl.errors import UserError

TaskKind = Literal["multiclass", "binary", "multilabel", "regression"]
KINDS: tuple[str, ...] = ("multiclass", "binary", "multilabel", "regression")

# Metric name -> higher is better? (the direction that delta_m and model selection need)
METRICS: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy", "macro_f1"),
    "binary": ("accuracy", "auroc"),
    "multilabel": ("accuracy", "auroc"),
    "regression": ("mae", "rmse"),
}
HIGHER_IS_BETTER: dict[str, bool] = {"accuracy": True, "macro_f1": True, "auroc": True, "mae": False, "rmse": False}


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task. ``num_outputs`` is the head's output size: classes for multiclass,
    1 for binary, labels for multilabel, target dimensions for regression."""

    name: str
    kind: TaskKind
    num_outputs: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"task '{self.name}': unknown kind '{self.kind}'; use one of {', '.join(KINDS)}")
        if self.num_outputs < 1 or (self.kind == "multiclass" and self.num_outputs < 2):
            raise UserError(f"task '{self.name}': num_outputs={self.num_outputs} is too small for {self.kind}")
        if self.kind == "binary" and self.num_outputs != 1:
            raise UserError(f"task '{self.name}': a binary task has num_outputs=1 (use multilabel for more)")

    @property
    def metrics(self) -> tuple[str, ...]:
        return METRICS[self.kind]

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def valid(self, target: Tensor) -> Tensor:
        """Boolean mask [B] of items whose label for this task is present."""
        if self.kind == "multiclass":
            return target >= 0
        return ~torch.isnan(target.reshape(target.shape[0], -1)).any(dim=1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the labelled items; zero (still attached to the graph) when none is."""
        keep = self.valid(target)
        output, target = output[keep], target[keep]
        if output.shape[0] == 0:
            return output.sum() * 0.0
        output = output.float()
        if self.kind == "multiclass":
            return F.cross_entropy(output, target.long())
        target = target.reshape(output.shape).float()
        if self.kind == "regression":
            return F.mse_loss(output, target)
        return F.binary_cross_entropy_with_logits(output, target)

    @property
    def num_classes(self) -> int | None:
        """Classes of a single-label task (multiclass: its classes; binary: 2); None for the others."""
        return {"multiclass": self.num_outputs, "binary": 2}.get(self.kind)

    def class_labels(self, target: Tensor) -> Tensor:
        """Single-label targets as class ids, -1 where missing (for kNN and linear probes)."""
        if self.kind == "multiclass":
            return target.long()
        if self.kind == "binary":
            return target.reshape(-1).nan_to_num(-1).long()
        raise ValueError(f"task '{self.name}' ({self.kind}) has no single class label")

    def predict(self, output: Tensor) -> Tensor:
        """Head output -> the prediction metrics score: class probabilities, label probabilities or values."""
        output = output.float()
        if self.kind == "multiclass":
            return output.softmax(dim=1)
        if self.kind in ("binary", "multilabel"):
            return output.sigmoid()
        return output


def select_tasks(available: list[TaskSpec], names: list[str] | None, dataset: str) -> list[TaskSpec]:
    """The tasks named in ``names`` (in that order), or all of them when ``names`` is empty or None."""
    if not names:
        return list(available)
    by_name = {t.name: t for t in available}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(
            f"unknown task {', '.join(repr(n) for n in unknown)} for data '{dataset}'; "
            f"it provides: {', '.join(by_name)}. Fix the override, e.g. tasks=[{next(iter(by_name))}]"
        )
    if len(set(names)) != len(names):
        raise UserError(f"tasks={list(names)} names a task twice; list each task once")
    return [by_name[n] for n in names]
