"""Tasks: a ``TaskSpec`` (plain data a dataset declares) and the ``Task`` of its kind, which owns the loss,
the streaming metrics with their directions and the missing-label marker. One file per kind; no code outside
this package switches on a kind.

    >>> task = build_task(TaskSpec("shape", "multiclass", 5))
    >>> loss = task.loss(logits, targets)            # mean over labelled items
    >>> scores = task.metrics(); scores.update(logits, targets); scores.compute()
"""

from __future__ import annotations

from mtlssl.tasks.base import Task, TaskMetrics
from mtlssl.tasks.directions import HIGHER_IS_BETTER, is_better
from mtlssl.tasks.registry import KINDS, task_class
from mtlssl.tasks.spec import TaskSpec, select_tasks


def build_task(spec: TaskSpec) -> Task:
    return task_class(spec.kind, spec.name)(spec)


def build_tasks(specs: list[TaskSpec]) -> list[Task]:
    return [build_task(s) for s in specs]


__all__ = ["HIGHER_IS_BETTER", "KINDS", "Task", "TaskMetrics", "TaskSpec", "build_task", "build_tasks",
           "is_better", "select_tasks"]
