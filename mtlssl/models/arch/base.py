"""``MultiTaskArchitecture``: the one contract the engine talks to, whatever is shared and how.

- ``forward(images, tasks=None) -> MTLOutput(outputs, shared)``: every (or the named) task's raw output, and the
  representation that feature-space gradient methods and SSL objectives use (None where nothing is shared);
- ``shared_parameters()``: what the weighting method balances; ``task_parameters(name)``: what a task owns;
- ``spec()``: plain data that rebuilds the architecture (``mtlssl.models.build.build_model``), no config needed;
- ``add_tasks(specs)``: new task-specific modules (transfer to new tasks).

Hard parameter sharing (``hps``) is one implementation; soft sharing (MTAN, MMoE, Cross-stitch, CGC/PLE) fits
the same contract. ``freeze_shared`` fixes the shared part (BatchNorm statistics included) for a probe of all
tasks at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from mtlssl.errors import UserError
from mtlssl.models.backbones.base import Backbone
from mtlssl.tasks import TaskSpec


@dataclass
class MTLOutput:
    outputs: dict[str, Tensor]
    shared: Tensor | None = None


class MultiTaskArchitecture(nn.Module, ABC):
    """``backbone`` is the shared encoder that ``encoder.init``, the probes and ``mtlssl export`` read and write (an
    architecture without one shared backbone does not support those)."""

    backbone: Backbone

    def __init__(self, tasks: Sequence[TaskSpec]) -> None:
        super().__init__()
        self.tasks: list[TaskSpec] = []
        self.shared_frozen = False
        self._check_new(tasks)
        self.tasks.extend(tasks)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def _check_new(self, specs: Sequence[TaskSpec]) -> None:
        names = [s.name for s in specs]
        twice = sorted({n for n in names if names.count(n) > 1 or n in self.task_names})
        if twice:
            raise UserError(f"tasks {twice} are already in the model, or named twice; give each task one name")

    @abstractmethod
    def forward(self, images: Tensor, tasks: Sequence[str] | None = None) -> MTLOutput:
        """[B, C, H, W] images in [0, 1] -> the outputs of ``tasks`` (default: all) and the shared representation."""

    @abstractmethod
    def shared_modules(self) -> list[nn.Module]:
        """The modules every task depends on."""

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters the weighting method balances (frozen ones included: callers filter requires_grad)."""
        return [p for module in self.shared_modules() for p in module.parameters()]

    @abstractmethod
    def task_parameters(self, name: str) -> list[nn.Parameter]:
        """The parameters only task ``name`` depends on (its head, its attention modules, ...)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """Plain data (no tensors) from which ``mtlssl.models.build.build_model`` rebuilds this architecture."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> MultiTaskArchitecture:
        """The architecture ``spec`` describes, randomly initialised."""

    @abstractmethod
    def add_tasks(self, specs: Sequence[TaskSpec]) -> None:
        """Add task-specific modules for new tasks (the shared part is kept)."""

    def freeze_shared(self, frozen: bool = True) -> None:
        """Fix (or free) the shared parameters; frozen shared modules also keep their BatchNorm statistics."""
        self.shared_frozen = frozen
        for p in self.shared_parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> MultiTaskArchitecture:
        super().train(mode)
        if self.shared_frozen:
            for module in self.shared_modules():
                module.eval()
        return self
