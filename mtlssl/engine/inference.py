"""Forward passes over a whole split without gradients: features for probes, outputs for metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mtlssl.data.image_set import ImageSet
from mtlssl.engine.runtime import Runtime, autocast
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.tasks import Task


@torch.no_grad()
def collect(
    module: nn.Module, data: ImageSet, batch_size: int, rt: Runtime,
    forward: Callable[[Tensor], Tensor | dict[str, Tensor]] | None = None,
) -> Tensor | dict[str, Tensor]:
    """Run ``forward`` (default: ``module``) over ``data`` in order, with ``module`` in eval mode.

    Returns the concatenated outputs on the CPU: a tensor, or a dict of tensors.
    """
    forward = forward or module
    was_training = module.training
    module.eval()
    chunks: list = []
    for images, _ in data.batches(batch_size):
        with autocast(rt.device, rt.precision):
            out = forward(rt.images(images))
        chunks.append({k: v.float().cpu() for k, v in out.items()} if isinstance(out, dict) else out.float().cpu())
    module.train(was_training)
    if chunks and isinstance(chunks[0], dict):
        return {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    return torch.cat(chunks)


@torch.no_grad()
def score_tasks(model: MultiTaskArchitecture, tasks: Sequence[Task], data: ImageSet, batch_size: int, rt: Runtime,
                prefix: str) -> dict[str, float]:
    """Every task's metrics and loss on a split, as ``{prefix}/{task}/{metric}``, plus ``{prefix}/loss`` (the
    unweighted mean of the task losses that are defined). Metrics are updated batch by batch."""
    was_training = model.training
    model.eval()
    scores = {task.name: task.metrics() for task in tasks}
    for images, targets in data.batches(batch_size):
        with autocast(rt.device, rt.precision):
            outputs = model(rt.images(images)).outputs
        for task in tasks:
            scores[task.name].update(outputs[task.name], targets[task.name].to(rt.device, non_blocking=True))
    model.train(was_training)
    metrics = {f"{prefix}/{name}/{metric}": value for name, accumulator in scores.items()
               for metric, value in accumulator.compute().items()}
    losses = [metrics[f"{prefix}/{task.name}/loss"] for task in tasks]
    defined = [v for v in losses if not math.isnan(v)]  # a task with no label in the split has no loss
    metrics[f"{prefix}/loss"] = sum(defined) / len(defined) if defined else math.nan
    return metrics
