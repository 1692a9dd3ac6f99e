"""``TaskSpec``: what a task predicts, as plain data (a dataset declares its tasks with it; checkpoints store it).

What a task does with its outputs (loss, metrics, missing-label marker) lives in the ``Task`` of its kind,
one file per kind in this package; ``build_task(spec)`` makes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mtlssl.errors import UserError


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task. ``num_outputs`` is the head's output size: classes for multiclass, 1 for binary,
    labels for multilabel, target dimensions for regression. Checked against its kind's rules on creation."""

    name: str
    kind: str
    num_outputs: int

    def __post_init__(self) -> None:
        from mtlssl.tasks.registry import task_class  # the kinds import this module: resolved at call time

        task_class(self.kind, self.name).check_spec(self)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


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
