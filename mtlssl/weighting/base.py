"""The one interface of every loss-weighting and gradient-balancing method (DESIGN §6).

- Loss-level methods implement ``combine(losses[T]) -> scalar``: one backward pass.
- Gradient-level methods implement ``aggregate(jacobian[T, P]) -> direction[P]`` for the shared
  parameters, from the per-task gradients as rows.

State (learned log-variances, running loss histories, ...) lives in parameters and buffers, so it is
checkpointed and resumed with ``state_dict``. ``last_weights`` holds the task weights of the last call,
for logging.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from mtlssl.errors import UserError


class Weighting(nn.Module, ABC):
    needs_gradients: ClassVar[bool]

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise UserError(f"a weighting method needs at least one task (got num_tasks={num_tasks})")
        self.num_tasks = num_tasks
        self.register_buffer("last_weights", torch.ones(num_tasks), persistent=False)

    def _check_tasks(self, t: int) -> None:
        if t != self.num_tasks:
            raise ValueError(f"{type(self).__name__} was built for {self.num_tasks} tasks, got {t}")


class LossWeighting(Weighting):
    needs_gradients = False

    @abstractmethod
    def combine(self, losses: Tensor) -> Tensor:
        """Per-task losses [T] -> the scalar loss to back-propagate."""


class GradientWeighting(Weighting):
    needs_gradients = True

    @abstractmethod
    def aggregate(self, jacobian: Tensor) -> Tensor:
        """Per-task gradients [T, P] of the shared parameters -> the update direction [P]."""
