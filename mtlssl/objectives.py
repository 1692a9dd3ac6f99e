"""Objectives: the named rows of a step's loss vector, each computed from one stream's batch.

- ``SupervisedTasks``: one row per task, from a labelled batch (train-mtl);
- ``SelfSupervised``: one row (``ssl``), an SSL method's loss on augmented views of a batch (pretraining, or
  an unlabelled stream beside the labelled one).

Every weighting method sees the whole vector, so an SSL objective is balanced like any other task. An
objective says which parameters each of its rows owns (a task's head, an SSL projector) and which trained
modules it brings (checkpointed with the run). ``prepare`` (device transfer, augmentation) runs outside
autocast; ``losses`` (the forward and the loss rows) inside it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtlssl.data.image_set import Batch
from mtlssl.models.arch.base import MTLOutput, MultiTaskArchitecture
from mtlssl.tasks import Task

Prepared = Any


class Objective(ABC):
    """Rows ``names`` of the loss vector, computed from a batch of stream ``stream``."""

    stream: str
    names: list[str]

    def __init__(self, augment: nn.Module, device: torch.device, memory_format: torch.memory_format) -> None:
        self.augment, self.device, self.memory_format = augment, device, memory_format

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Trained modules this objective owns, by checkpoint name (an SSL projector); none by default."""
        return {}

    @abstractmethod
    def own_parameters(self, model: MultiTaskArchitecture) -> list[list[nn.Parameter]]:
        """For each row, the parameters only it depends on."""

    @abstractmethod
    def parameter_groups(self, model: MultiTaskArchitecture) -> dict[str, list[nn.Parameter]]:
        """Those parameters under readable names, for messages (e.g. a non-finite gradient)."""

    @abstractmethod
    def prepare(self, batch: Batch, generator: torch.Generator) -> Prepared:
        """The batch on the device, augmented with ``generator``'s draws."""

    @abstractmethod
    def losses(self, model: MultiTaskArchitecture, prepared: Prepared) -> tuple[Tensor, MTLOutput]:
        """The rows' losses [len(names)] (fp32) and the model's output."""


class SupervisedTasks(Objective):
    """Each task's loss on its head's output for a labelled batch; items without a label are skipped."""

    def __init__(self, tasks: Sequence[Task], augment: nn.Module, device: torch.device,
                 memory_format: torch.memory_format, stream: str = "train") -> None:
        super().__init__(augment, device, memory_format)
        self.tasks, self.stream, self.names = list(tasks), stream, [t.name for t in tasks]

    def own_parameters(self, model: MultiTaskArchitecture) -> list[list[nn.Parameter]]:
        return [model.task_parameters(name) for name in self.names]

    def parameter_groups(self, model: MultiTaskArchitecture) -> dict[str, list[nn.Parameter]]:
        return {f"the head of task {name}": model.task_parameters(name) for name in self.names}

    def prepare(self, batch: Batch, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        images, targets = batch
        x = self.augment(images.to(self.device, non_blocking=True), generator)
        return x.contiguous(memory_format=self.memory_format), {
            k: v.to(self.device, non_blocking=True) for k, v in targets.items()}

    def losses(self, model: MultiTaskArchitecture, prepared: tuple[Tensor, dict[str, Tensor]]) -> tuple[Tensor,
                                                                                                          MTLOutput]:
        x, targets = prepared
        output = model(x, self.names)
        losses = torch.stack([t.loss(output.outputs[t.name], targets[t.name]) for t in self.tasks]).float()
        return losses, output


class SelfSupervised(Objective):
    """An SSL method's loss on ``method.num_views`` augmented views of each image, from the model's shared
    representation (its labels, if any, are never read)."""

    names = ["ssl"]

    def __init__(self, method: nn.Module, augment: nn.Module, device: torch.device,
                 memory_format: torch.memory_format, stream: str = "unlabeled") -> None:
        super().__init__(augment, device, memory_format)
        self.method, self.stream = method, stream

    @property
    def modules(self) -> dict[str, nn.Module]:
        return {"ssl": self.method}

    def own_parameters(self, model: MultiTaskArchitecture) -> list[list[nn.Parameter]]:
        return [list(self.method.parameters())]

    def parameter_groups(self, model: MultiTaskArchitecture) -> dict[str, list[nn.Parameter]]:
        return {"the SSL projector": list(self.method.parameters())}

    def prepare(self, batch: Batch, generator: torch.Generator) -> Tensor:
        views = torch.cat(self.augment.views(batch[0].to(self.device, non_blocking=True), self.method.num_views,
                                             generator))
        return views.contiguous(memory_format=self.memory_format)

    def losses(self, model: MultiTaskArchitecture, prepared: Tensor) -> tuple[Tensor, MTLOutput]:
        output = model(prepared, tasks=())
        if output.shared is None:
            raise ValueError(f"{type(model).__name__} shares no representation for an SSL objective")
        return self.method.loss(output.shared).view(1), output
