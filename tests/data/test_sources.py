from pathlib import Path

import numpy as np
import pytest
import torch

from mtlssl.data.sources import data_root, holdout, open_torchvision, resize_uint8, subsample, to_uint8_nchw
from mtlssl.errors import UserError


def test_data_root_prefers_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLSSL_DATA", "/env/data")
    assert data_root("/given") == Path("/given") and data_root(None) == Path("/env/data")
    monkeypatch.delenv("MTLSSL_DATA")
    assert data_root(None) == Path.home() / ".cache" / "mtlssl" / "data"


def test_missing_files_become_one_clear_error(tmp_path: Path) -> None:
    def torchvision_like() -> None:
        raise RuntimeError("Dataset not found. You can use download=True to download it")

    with pytest.raises(UserError, match=r"data 'cifar10': .*download is off.*Fetch cifar-10-python.tar.gz"):
        open_torchvision("cifar10", tmp_path, False, torchvision_like, "cifar-10-python.tar.gz")


def test_layouts_resize_and_deterministic_splits() -> None:
    nhwc = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    assert torch.equal(to_uint8_nchw(nhwc, "NHWC")[1, 2], torch.as_tensor(nhwc[1, :, :, 2]))
    assert to_uint8_nchw(np.zeros((3, 5, 5), np.uint8), "NHW").shape == (3, 1, 5, 5)
    flat = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    assert torch.equal(resize_uint8(flat, 4), torch.full((2, 3, 4, 4), 200, dtype=torch.uint8))
    images, labels = torch.zeros(10, 1, 2, 2, dtype=torch.uint8), {"y": torch.arange(10)}
    train, val = holdout(images, labels, 3, seed=1)
    again = holdout(images, labels, 3, seed=1)[1]
    assert len(val) == 3 and len(train) == 7 and torch.equal(val.targets["y"], again.targets["y"])
    assert set(train.targets["y"].tolist()).isdisjoint(val.targets["y"].tolist())
    with pytest.raises(UserError, match="data.n_val=10"):
        holdout(images, labels, 10, seed=0)
    kept = subsample(images, labels, 4, seed=0)[1]["y"]
    assert len(kept) == 4 and kept.tolist() == sorted(kept.tolist())
