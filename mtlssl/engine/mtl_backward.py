"""One multi-task backward pass: set every trainable gradient for a step, whatever the weighting method.

- Loss-level methods: one backward of ``combine(losses)``.
- Gradient-level methods: the exact per-task Jacobian of the shared tensors (``engine.gradients``), the
  method's ``aggregate`` direction written into the encoder's gradients, and each head's own task gradient.

With fp16 the losses are scaled before any backward (so small gradients do not underflow), the Jacobian is
unscaled before the method sees it, and the gradients are written scaled, so the grad scaler's
unscale/overflow check works unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mtlssl.engine.gradients import assign_flat_gradient, check_gradient_options, jacobian
from mtlssl.model import MultiTaskModel
from mtlssl.weighting.base import GradientWeighting, LossWeighting, Weighting


@dataclass(frozen=True)
class GradientOptions:
    grad_space: str = "params"      # params | features (MGDA-UB style, an approximation)
    jacobian: str = "auto"          # auto | loop | vmap
    jacobian_chunk: int | None = None

    def __post_init__(self) -> None:
        check_gradient_options(self.grad_space, self.jacobian, self.jacobian_chunk)


def mtl_backward(
    model: MultiTaskModel, features: Tensor, losses: Tensor, weighting: Weighting, options: GradientOptions,
    scaler: torch.amp.GradScaler | None = None, want_jacobian: bool = False, grad_scale: float = 1.0,
) -> Tensor | None:
    """Add this batch's gradients to ``.grad`` (scaled by ``scaler``, if any, and by ``grad_scale``: 1/k when
    accumulating k micro-batches; the method itself always sees the true losses and gradients). Returns the
    per-task Jacobian when one was computed (gradient methods, or ``want_jacobian`` for logging), else None."""
    shared = [p for p in model.encoder.parameters() if p.requires_grad]
    heads = [p for p in model.heads.parameters() if p.requires_grad]
    scaled = scaler.scale(losses) if scaler is not None else losses
    scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
    if isinstance(weighting, LossWeighting):
        measured = jacobian(scaled, shared, options.jacobian) / scale if want_jacobian and shared else None
        total = weighting.combine(losses) * grad_scale
        (scaler.scale(total) if scaler is not None else total).backward()
        return measured
    if not isinstance(weighting, GradientWeighting):
        raise TypeError(f"{type(weighting).__name__} is neither a loss- nor a gradient-level method")
    if not shared:  # a frozen encoder leaves nothing to balance: each head learns its own task
        (scaled.sum() * grad_scale).backward()
        return None
    on_features = options.grad_space == "features"
    inputs = [features] if on_features else shared
    jac = jacobian(scaled, inputs, options.jacobian, options.jacobian_chunk).float() / scale
    if torch.isfinite(jac).all():
        direction = weighting.aggregate(jac, losses.detach().float())
    else:  # fp16 overflow or a NaN: the method's state (EMAs, targets) must never see it. NaN gradients make the
        # grad scaler skip the step, or the non-finite guard stop or skip it.
        direction = torch.full(jac.shape[1:], torch.nan, device=jac.device)
    head_grads = torch.autograd.grad(scaled.sum() * grad_scale, heads, retain_graph=on_features) if heads else ()
    for p, g in zip(heads, head_grads, strict=True):
        p.grad = g if p.grad is None else p.grad.add_(g)
    if on_features:
        features.backward(direction.view_as(features).to(features.dtype) * (scale * grad_scale))
    else:
        assign_flat_gradient(shared, direction * (scale * grad_scale))
    return jac
