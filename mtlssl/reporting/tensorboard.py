"""TensorBoard event files: scalars under train/, val/, weights/, grad/ and the run's hparams.

The hparams summary is written into the run's own event directory (not a timestamped subfolder, as
``SummaryWriter.add_hparams`` does), so ``tensorboard --logdir <sweep>`` lines up curves and hparams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary


class TensorBoard:
    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        """``purge_step``: the first step a resumed run writes (the saved step + 1); TensorBoard hides the killed
        run's events from that step on, so the steps between the checkpoint and the kill are not shown twice."""
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float], step: int, prefix: str = "") -> None:
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}{name}", value, step)

    def image(self, tag: str, image: Tensor, step: int) -> None:
        """A [3, H, W] image in [0, 1]."""
        self.writer.add_image(tag, image, step)

    def hparams(self, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Record the run's flattened config with its final metrics (shown in the HParams tab)."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
        final = {f"hparam/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        for summary in hparams_summary(clean, final):
            self.writer.file_writer.add_summary(summary)
        for name, value in final.items():
            self.writer.add_scalar(name, value)

    def close(self) -> None:
        self.writer.close()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 0.1}} -> {"optim.lr": 0.1}; lists become strings."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if value is None or isinstance(value, (int, float, str, bool)) else str(value)
    return flat
