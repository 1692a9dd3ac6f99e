"""Forward passes over a whole split without gradients: features for probes, outputs for metrics."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mtlssl.data.image_set import ImageSet
from mtlssl.engine.runtime import Runtime, autocast
from mtlssl.metrics import task_metrics
from mtlssl.model import MultiTaskModel


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


def score_tasks(model: MultiTaskModel, data: ImageSet, batch_size: int, rt: Runtime, prefix: str) -> dict[str, float]:
    """Every task's metrics and loss on a split, as ``{prefix}/{task}/{metric}``, plus ``{prefix}/loss``
    (the unweighted mean of the task losses)."""
    outputs = collect(model, data, batch_size, rt, forward=lambda x: model(x)[1])
    metrics: dict[str, float] = {}
    losses = []
    for task in model.tasks:
        target = data.targets[task.name]
        for name, value in task_metrics(task, outputs[task.name], target).items():
            metrics[f"{prefix}/{task.name}/{name}"] = value
        losses.append(task.loss(outputs[task.name], target).item())
        metrics[f"{prefix}/{task.name}/loss"] = losses[-1]
    metrics[f"{prefix}/loss"] = sum(losses) / len(losses)
    return metrics
