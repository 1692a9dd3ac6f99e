"""One multi-task backward pass: set every trainable gradient for a step, whatever the weighting method.

The engine sees a loss vector (one row per supervised task or SSL objective), the shared parameters the
weighting balances (``MultiTaskArchitecture.shared_parameters``) and each row's own parameters (a task's head,
an SSL projector):

- Loss-level methods: one backward of ``combine(losses)``.
- Gradient-level methods: the exact per-row Jacobian of the shared parameters (``engine.gradients``), or of the
  shared representation (``MTLOutput.shared``, ``grad_space=features``); the method's ``aggregate`` direction
  written into the shared gradients; and each row's own parameters get that row's gradient, weighted as the
  method's paper and official code weight it (``Weighting.task_specific_weights``: IMTL's e^s, Nash-MTL's alpha).

With fp16 the losses are scaled before any backward (so small gradients do not underflow), the Jacobian is
unscaled before the method sees it, and the gradients are written scaled, so the grad scaler's
unscale/overflow check works unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mtlssl.engine.gradients import assign_flat_gradient, check_gradient_options, jacobian
from mtlssl.weighting.base import GradientWeighting, LossWeighting, Weighting


@dataclass(frozen=True)
class GradientOptions:
    grad_space: str = "params"      # params | features (MGDA-UB style, an approximation)
    jacobian: str = "auto"          # auto | loop | vmap
    jacobian_chunk: int | None = None

    def __post_init__(self) -> None:
        check_gradient_options(self.grad_space, self.jacobian, self.jacobian_chunk)


def backward(
    losses: Tensor, shared: Sequence[Tensor], own: Sequence[Sequence[Tensor]], weighting: Weighting,
    options: GradientOptions, features: Tensor | None = None, scaler: torch.amp.GradScaler | None = None,
    want_jacobian: bool = False, grad_scale: float = 1.0,
) -> Tensor | None:
    """Add this batch's gradients to ``.grad`` (scaled by ``scaler``, if any, and by ``grad_scale``: 1/k when
    accumulating k micro-batches; the method itself always sees the true losses and gradients).

    ``shared``: the trainable shared parameters; ``own[t]``: the trainable parameters only row t depends on;
    ``features``: the shared representation (for ``grad_space=features``). Returns the per-row Jacobian when one
    was computed (gradient methods, or ``want_jacobian`` for logging), else None.
    """
    shared = [p for p in shared if p.requires_grad]
    owned = [p for row in own for p in row if p.requires_grad]
    scaled = scaler.scale(losses) if scaler is not None else losses
    scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
    if isinstance(weighting, LossWeighting):
        measured = jacobian(scaled, shared, options.jacobian) / scale if want_jacobian and shared else None
        total = weighting.combine(losses) * grad_scale
        (scaler.scale(total) if scaler is not None else total).backward()
        return measured
    if not isinstance(weighting, GradientWeighting):
        raise TypeError(f"{type(weighting).__name__} is neither a loss- nor a gradient-level method")
    if not shared:  # a frozen encoder leaves nothing to balance: each row trains its own parameters
        (scaled.sum() * grad_scale).backward()
        return None
    on_features = options.grad_space == "features"
    if on_features and features is None:
        raise ValueError("grad_space=features needs the shared representation of the batch")
    inputs = [features] if on_features else shared
    jac = jacobian(scaled, inputs, options.jacobian, options.jacobian_chunk).float() / scale
    if torch.isfinite(jac).all():
        direction = weighting.aggregate(jac, losses.detach().float())
    else:  # fp16 overflow or a NaN: the method's state (EMAs, targets) must never see it. NaN gradients make the
        # grad scaler skip the step, or the non-finite guard stop or skip it.
        direction = torch.full(jac.shape[1:], torch.nan, device=jac.device)
    # Each row's own parameters depend on that row's loss only, so one backward of the weighted sum gives each its
    # own gradient, times the weight the method's paper and official code give it (1 for most methods).
    weighted = (scaled * weighting.task_specific_weights.to(scaled)).sum() * grad_scale
    own_grads = torch.autograd.grad(weighted, owned, retain_graph=on_features) if owned else ()
    for p, g in zip(owned, own_grads, strict=True):
        p.grad = g if p.grad is None else p.grad.add_(g)
    if on_features:
        features.backward(direction.view_as(features).to(features.dtype) * (scale * grad_scale))
    else:
        assign_flat_gradient(shared, direction * (scale * grad_scale))
    return jac
