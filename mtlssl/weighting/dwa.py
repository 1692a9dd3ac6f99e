"""Dynamic Weight Average (DWA; Liu, Johns & Davison, CVPR 2019, "End-to-End Multi-Task Learning with Attention").

    w_k(t) = K exp(r_k(t-1) / T) / sum_i exp(r_i(t-1) / T),    r_k(t-1) = L_k(t-1) / L_k(t-2)

where L_k(t) is task k's mean training loss over epoch t (the engine reports it through ``epoch_end``), so a task
whose loss fell more slowly in the last epoch gets more weight. The weights sum to K, and are 1 for the first two
epochs, where there is no ratio yet. The loss is sum_k w_k(t) L_k; the paper uses T = 2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.weighting.base import LossWeighting


class DWA(LossWeighting):
    def __init__(self, num_tasks: int, temperature: float = 2.0) -> None:
        super().__init__(num_tasks)
        if not temperature > 0:
            raise UserError(f"weighting.temperature must be > 0 (got {temperature}); the DWA paper uses 2")
        self.temperature = float(temperature)
        # Buffers, so that a resumed run weights its next epoch exactly as an uninterrupted one would:
        # the last two epoch-mean loss vectors (older first), the number of finished epochs, and the weights
        # they give (cached once per epoch, so that combine never has to branch on the epoch count).
        self.register_buffer("epoch_losses", torch.ones(2, num_tasks))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("weights", torch.ones(num_tasks))

    def epoch_end(self, mean_losses: Tensor) -> None:
        self._check_tasks(mean_losses.shape[0])
        latest = mean_losses.detach().to(self.epoch_losses)
        self.epoch_losses.copy_(torch.stack([self.epoch_losses[1], latest]))
        self.epochs_seen += 1
        if int(self.epochs_seen) >= 2:  # a ratio needs two finished epochs; until then the weights stay 1
            ratio = self.epoch_losses[1] / self.epoch_losses[0]
            self.weights.copy_(self.num_tasks * torch.softmax(ratio / self.temperature, dim=0))

    def combine(self, losses: Tensor) -> Tensor:
        self._check_tasks(losses.shape[0])
        self.last_weights = self.weights.clone()
        return (self.weights.to(losses.dtype) * losses).sum()
