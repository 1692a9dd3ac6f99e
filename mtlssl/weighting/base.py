"""The one interface of every loss-weighting and gradient-balancing method (DESIGN §6).

- Loss-level methods implement ``combine(losses[T]) -> scalar``: one backward pass.
- Gradient-level methods implement ``aggregate(jacobian[T, P], losses[T]) -> direction[P]`` for the
  shared parameters, from the per-task gradients as rows (the engine computes them exactly).

Some published methods need more than one step's losses. Each such need is one explicit hook, which the
engine calls for every method (the defaults do nothing):

- ``epoch_end(mean_losses[T])`` after each epoch (DWA's loss-ratio history);
- ``step_end(new_losses[T])`` with the batch's losses after the update, computed without gradient, when
  ``needs_post_step_losses`` is set (FAMO's one extra forward);
- ``generator``: the run's seeded generator, for the methods that draw random numbers (RLW's weights,
  PCGrad's task order, GradDrop's masks), so a run repeats exactly.

State (learned log-variances, loss histories, logits, ...) lives in parameters and buffers, so it is
checkpointed and resumed with ``state_dict``. ``last_weights`` holds the task weights of the last call,
for logging (for gradient methods: the weights of the task gradients in the returned direction, where the
method defines them).

``task_specific_weights`` [T] is the weight of each task's loss in the gradient of that task's own parameters
(its head), as the method's paper and official code apply it; set by ``aggregate``. The engine gives task t's
own parameters the gradient of task_specific_weights[t] * L_t. It is 1 unless a gradient method's source
weights the heads (docs/weighting.md, "What each task's head gets"); loss-level methods leave it at 1, since
one backward of ``combine(losses)`` already weights every head.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor, nn

from mtlssl.errors import UserError


class Weighting(nn.Module, ABC):
    needs_gradients: ClassVar[bool]
    needs_post_step_losses: ClassVar[bool] = False

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        if num_tasks < 1:
            raise UserError(f"a weighting method needs at least one task (got num_tasks={num_tasks})")
        self.num_tasks = num_tasks
        self.generator: torch.Generator | None = None
        self.register_buffer("last_weights", torch.ones(num_tasks), persistent=False)
        # Derived from each step's inputs, so not checkpointed (like last_weights); see the module docstring.
        self.register_buffer("task_specific_weights", torch.ones(num_tasks), persistent=False)

    def _set_task_specific_weights(self, weights: Tensor, losses: Tensor) -> None:
        """Store each task's head weight: detached, float32, on the losses' device."""
        self.task_specific_weights = weights.detach().to(device=losses.device, dtype=torch.float32)

    def _check_tasks(self, t: int) -> None:
        if t != self.num_tasks:
            raise ValueError(f"{type(self).__name__} was built for {self.num_tasks} tasks, got {t}")

    def epoch_end(self, mean_losses: Tensor) -> None:
        """Called with each task's mean training loss at the end of every epoch."""

    def step_end(self, new_losses: Tensor) -> None:
        """Called after each update with the same batch's losses under the new parameters
        (only when ``needs_post_step_losses``)."""


class LossWeighting(Weighting):
    needs_gradients = False

    @abstractmethod
    def combine(self, losses: Tensor) -> Tensor:
        """Per-task losses [T] -> the scalar loss to back-propagate."""


class GradientWeighting(Weighting):
    needs_gradients = True

    def random_orders(self) -> list[list[int]]:
        """For each task i, the other tasks in a random order drawn from ``generator`` (PCGrad, GradVac)."""
        device = self.generator.device if self.generator is not None else "cpu"
        orders = []
        for i in range(self.num_tasks):
            others = [j for j in range(self.num_tasks) if j != i]
            perm = torch.randperm(len(others), generator=self.generator, device=device).tolist()
            orders.append([others[k] for k in perm])
        return orders

    @abstractmethod
    def aggregate(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        """Per-task gradients [T, P] of the shared parameters (and the losses [T] they come from)
        -> the update direction [P]."""
