"""Models from plain data: ``build_model(spec)`` rebuilds any architecture from its ``spec()`` (as a checkpoint
stores it), and ``model_spec`` writes that spec from a run's config, so a new model and a reloaded one are
made the same way.

A spec: ``{"arch": "hps", "backbone": <backbone config>, "head": <head config>, "tasks": [task dicts]}``; the
backbone and head configs are the ``_target_`` nodes of ``conf/encoder/<name>.yaml`` (``arch:``) and
``conf/heads/<name>.yaml``, resolved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from mtlssl.config import to_plain
from mtlssl.errors import UserError
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.models.arch.hps import HardSharing
from mtlssl.tasks import TaskSpec

ARCHITECTURES: dict[str, type[MultiTaskArchitecture]] = {"hps": HardSharing}


def model_spec(arch: str, backbone: DictConfig, head: DictConfig | None, tasks: Sequence[TaskSpec]) -> dict[str, Any]:
    """The spec of a new model: architecture name, the resolved backbone and head configs, the tasks."""
    if arch not in ARCHITECTURES:
        raise UserError(f"arch={arch} is not an architecture; use one of {', '.join(ARCHITECTURES)}")
    return {"arch": arch, "backbone": to_plain(backbone), "head": to_plain(head) if head is not None else None,
            "tasks": [t.as_dict() for t in tasks]}


def build_model(spec: dict[str, Any]) -> MultiTaskArchitecture:
    """The architecture ``spec`` describes, randomly initialised (parameters drawn from torch's global RNG in
    a fixed order: the shared part, then each task's modules in task order)."""
    return ARCHITECTURES[spec["arch"]].from_spec(spec)
