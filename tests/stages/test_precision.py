"""Mixed precision through the real stage on the CPU: bf16 autocast, and fp16 with the grad scaler."""

import math
from pathlib import Path

import pytest
import torch

from mtlssl.stages import train_mtl
from tests.conftest import tiny


@pytest.mark.parametrize("precision", ["bf16", "16"])
@pytest.mark.parametrize("method", ["uncertainty", "pcgrad"])
def test_mixed_precision_trains_with_loss_and_gradient_methods(precision: str, method: str, tmp_path: Path) -> None:
    results = train_mtl.run(tiny("train_mtl", f"precision={precision}", f"weighting={method}", "trainer.epochs=2"),
                            tmp_path)
    assert math.isfinite(results["test/loss"])
    last = torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)
    assert str(last["config"]["precision"]) == precision
    if precision == "16":  # the scaler's state is saved for exact resumption
        assert last["train"]["scaler"]["scale"] > 0
