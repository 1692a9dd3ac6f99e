"""The task kinds by name: the one place a kind's name is looked up."""

from __future__ import annotations

from mtlssl.errors import UserError
from mtlssl.tasks.base import Task
from mtlssl.tasks.binary import Binary
from mtlssl.tasks.multiclass import Multiclass
from mtlssl.tasks.multilabel import Multilabel
from mtlssl.tasks.regression import Regression

KINDS: dict[str, type[Task]] = {cls.kind: cls for cls in (Multiclass, Binary, Multilabel, Regression)}


def task_class(kind: str, name: str = "?") -> type[Task]:
    if kind not in KINDS:
        raise UserError(f"task '{name}': unknown kind '{kind}'; use one of {', '.join(KINDS)}")
    return KINDS[kind]

