"""Real-valued targets of ``num_outputs`` dimensions: mean squared error, MAE and RMSE over all dimensions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric

from mtlssl.tasks.base import FLOAT32_MAX, Task


class Regression(Task):
    """Targets are [B, D] or [B] for one dimension (``NaN`` in any dimension marks the item missing). The
    metrics accumulate in float64, so a long split does not lose digits to float32 sums."""

    kind = "regression"
    directions = {"mae": False, "rmse": False}

    def parse_text(self, text: str) -> tuple[float | None, str]:
        value, problem = super().parse_text(text)
        if value is not None and abs(value) > FLOAT32_MAX:
            return None, f"'{text}' is too large for a float32 target (|value| <= {FLOAT32_MAX:.3g})"
        return value, problem

    def _loss(self, output: Tensor, target: Tensor, reduction: str) -> Tensor:
        return F.mse_loss(output, target.reshape(output.shape).float(), reduction=reduction)

    def predict(self, output: Tensor) -> Tensor:
        return output.float()

    def _scorers(self) -> dict[str, Metric]:
        return {"mae": MeanAbsoluteError().set_dtype(torch.float64),
                "rmse": MeanSquaredError(squared=False).set_dtype(torch.float64)}

    def _update_scorers(self, scorers: dict[str, Metric], output: Tensor, target: Tensor) -> None:
        preds = output.double().reshape(-1)
        target = target.reshape(output.shape).reshape(-1).double()
        for scorer in scorers.values():
            scorer.update(preds, target)
