"""The multi-task model: one encoder shared by all tasks (hard parameter sharing) and one head per task."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from mtlssl.encoders.base import Encoder
from mtlssl.io import refuse_unfit_states
from mtlssl.tasks import TaskSpec

HeadFactory = Callable[..., nn.Module]


class MultiTaskModel(nn.Module):
    def __init__(self, encoder: Encoder, tasks: Sequence[TaskSpec], head: HeadFactory) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = list(tasks)
        self.heads = nn.ModuleDict({t.name: head(in_dim=encoder.out_dim, out_dim=t.num_outputs) for t in tasks})
        # e.g. resuming after tasks= or heads= changed: one clear message instead of torch's key listing
        refuse_unfit_states(self.heads, "task heads", "use the tasks= and heads= it was trained with (that run's "
                            "resolved_config.yaml), or start over in a new hydra.run.dir")

    def forward_heads(self, features: Tensor) -> dict[str, Tensor]:
        """Shared features [B, D] -> every task's raw output."""
        return {name: head(features) for name, head in self.heads.items()}

    def forward(self, images: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Images -> (shared features, per-task outputs); gradient methods may work on either."""
        features = self.encoder(images)
        return features, self.forward_heads(features)
