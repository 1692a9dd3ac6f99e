"""Linear-probe accuracy: how linearly separable the classes are in frozen features.

A multinomial logistic regression fit full-batch with L-BFGS, in float64 on the CPU, from a zero
start: no minibatch order or initialisation to seed, so the same features give the same score.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> float:
    """Test accuracy in [0, 1] of a linear classifier fit on the train features.

    Features are standardised with the train mean and std; the loss is cross-entropy plus
    ``weight_decay * ||W||^2 / 2`` (bias not penalised). Items labelled -1 (missing) are left out.
    NaN when the train or the test split holds no labelled item. Safe to call under ``no_grad``
    or ``inference_mode``.
    """
    train_keep, test_keep = train_labels >= 0, test_labels >= 0
    if not bool(train_keep.any()) or not bool(test_keep.any()):
        return math.nan
    # Fitting needs autograd, whatever mode the caller (typically an evaluation loop) is in.
    with torch.inference_mode(False), torch.enable_grad():
        x_train = _as_cpu64(train_features[train_keep])
        x_test = _as_cpu64(test_features[test_keep])
        mean, std = x_train.mean(dim=0), x_train.std(dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays unscaled
        # Standardising also makes fresh tensors, so inference-mode inputs can be saved for backward.
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        model = _fit(x_train, train_labels[train_keep].long().cpu(), num_classes, weight_decay, max_iter)
        with torch.no_grad():
            predicted = model(x_test).argmax(dim=1)
    return (predicted == test_labels[test_keep].long().cpu()).double().mean().item()


def _as_cpu64(features: Tensor) -> Tensor:
    return features.detach().to(device="cpu", dtype=torch.float64)


def _fit(x: Tensor, y: Tensor, num_classes: int, weight_decay: float, max_iter: int) -> nn.Linear:
    model = nn.Linear(x.shape[1], num_classes, dtype=torch.float64)
    nn.init.zeros_(model.weight)
    nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y) + weight_decay * model.weight.pow(2).sum() / 2
        loss.backward()
        return loss

    optimizer.step(closure)
    return model
