"""The ``Task`` contract every kind follows, and ``TaskMetrics``, a task's metrics over a split, batch by batch.

A missing target is marked in the target tensor itself, so batches stay plain tensors (each kind says how:
``-1`` for a class id, ``NaN`` elsewhere). Losses and metrics skip such items rather than fail or count them.
Metrics are torchmetrics objects updated per batch, so scoring a split never holds all its outputs; a metric
that is undefined on what was seen is NaN rather than an error (every metric when no item is labelled).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from mtlssl.errors import UserError
from mtlssl.tasks.spec import TaskSpec

Scores = dict[str, float]
FLOAT32_MAX = torch.finfo(torch.float32).max  # targets are float32: a larger value would become inf


def parse_number(text: str) -> float | None:
    """A finite number, or None for text, NaN or infinity (which are never valid labels: leave it empty)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Task(ABC):
    """A task of one kind: its loss, its metrics with their directions, its missing-label marker."""

    kind: ClassVar[str]
    # Metric name -> higher is better, in report order; the first is the task's primary metric.
    directions: ClassVar[dict[str, bool]]
    min_outputs: ClassVar[int] = 1

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, num_outputs={self.num_outputs})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_outputs(self) -> int:
        return self.spec.num_outputs

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(self.directions)

    @property
    def primary_metric(self) -> str:
        return self.metric_names[0]

    @classmethod
    def check_spec(cls, spec: TaskSpec) -> None:
        """Refuse a spec this kind cannot serve (e.g. a multiclass task with one class)."""
        if spec.num_outputs < cls.min_outputs:
            raise UserError(f"task '{spec.name}': num_outputs={spec.num_outputs} is too small for {spec.kind}")

    def valid(self, target: Tensor) -> Tensor:
        """Boolean mask [B] of the items whose label for this task is present: by default, none of its entries
        is NaN (the marker of every kind with float targets)."""
        return ~torch.isnan(target.reshape(target.shape[0], -1)).any(dim=1)

    @abstractmethod
    def _loss(self, output: Tensor, target: Tensor, reduction: str) -> Tensor:
        """The loss of labelled items: fp32 ``output`` [n, num_outputs], ``target`` as the data holds it."""

    def _loss_terms(self, output: Tensor) -> int:
        """How many terms the mean reduction of ``_loss`` divides by: one per output entry, unless a kind
        says otherwise (cross-entropy: one per item)."""
        return output.numel()

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Mean loss over the labelled items; zero (still attached to the graph) when none is."""
        keep = self.valid(target)
        output, target = output[keep], target[keep]
        if output.shape[0] == 0:
            return output.sum() * 0.0
        return self._loss(output.float(), target, "mean")

    @abstractmethod
    def predict(self, output: Tensor) -> Tensor:
        """Head output -> the prediction: class probabilities, label probabilities or values."""

    @property
    def num_classes(self) -> int | None:
        """Classes of a single-label task (what kNN and linear probes score); None for the other kinds."""
        return None

    def class_labels(self, target: Tensor) -> Tensor:
        """Single-label targets as class ids, -1 where missing (for kNN and linear probes)."""
        raise ValueError(f"task '{self.name}' ({self.kind}) has no single class label")

    # --- labels written as text, one column per output entry (e.g. a CSV manifest's cells) ---------------------

    one_column: ClassVar[bool] = False  # a single-label kind reads exactly one column

    @classmethod
    def spec_from_columns(cls, name: str, columns: Sequence[str], num_outputs: int | None) -> TaskSpec:
        """The spec of a task whose label is written in ``columns``, one per output; ``num_outputs`` as declared
        (None: what the columns say). A problem is a UserError for the caller to place."""
        if cls.one_column and len(columns) != 1:
            raise UserError(f"a {cls.kind} task reads one column, got {list(columns)}; use multilabel or "
                            "regression for several")
        if num_outputs not in (None, len(columns)):
            raise UserError(f"num_outputs={num_outputs} does not match its {len(columns)} column(s); drop "
                            "num_outputs or list one column per output")
        return TaskSpec(name, cls.kind, len(columns))

    def parse_text(self, text: str) -> tuple[float | None, str]:
        """One filled cell -> (value, "") or (None, what is wrong with it)."""
        value = parse_number(text)
        return (value, "") if value is not None else (None, f"'{text}' is not a finite number")

    @property
    def text_fix(self) -> str:
        return "leave the cell empty for a missing label"

    def missing_row(self, width: int) -> list[float]:
        """The values that mark a missing label, for a label written in ``width`` columns."""
        return [math.nan] * width

    def target_tensor(self, values: Tensor) -> Tensor:
        """Parsed values [N, width] (float64) -> the target tensor batches carry."""
        return values.float()

    def metrics(self) -> TaskMetrics:
        """A fresh accumulator of this task's metrics (and mean loss) over a split."""
        return TaskMetrics(self, self._scorers())

    @abstractmethod
    def _scorers(self) -> dict[str, Metric]:
        """One torchmetrics object per metric name, updated by ``_update_scorers``."""

    @abstractmethod
    def _update_scorers(self, scorers: dict[str, Metric], output: Tensor, target: Tensor) -> None:
        """Feed one batch of labelled items (fp32 outputs) to the scorers."""

    def _compute_scorers(self, scorers: dict[str, Metric]) -> Scores:
        return {name: float(scorer.compute()) for name, scorer in scorers.items()}


class TaskMetrics:
    """One task's metrics and mean loss over a split, updated batch by batch (``update``, then ``compute``)."""

    def __init__(self, task: Task, scorers: dict[str, Metric]) -> None:
        self.task = task
        self.scorers = scorers
        self.labelled = 0
        self.loss_sum: Tensor | None = None  # float64 on the outputs' device
        self.loss_terms = 0

    def update(self, output: Tensor, target: Tensor) -> None:
        keep = self.task.valid(target)
        output, target = output.detach()[keep].float(), target.detach()[keep]
        if output.shape[0] == 0:
            return
        if self.loss_sum is None:
            self.loss_sum = torch.zeros((), dtype=torch.float64, device=output.device)
            for scorer in self.scorers.values():
                scorer.to(output.device)
        self.labelled += output.shape[0]
        self.loss_sum += self.task._loss(output, target, "sum").double()
        self.loss_terms += self.task._loss_terms(output)
        self.task._update_scorers(self.scorers, output, target)

    def compute(self) -> Scores:
        """``{metric: value}`` in the task's metric order, then ``loss``; all NaN when no item was labelled."""
        if not self.labelled:
            return {name: math.nan for name in (*self.task.metric_names, "loss")}
        return {**self.task._compute_scorers(self.scorers), "loss": float(self.loss_sum / self.loss_terms)}
