"""CIFAR-10 and CIFAR-100, read with torchvision from the original python archives.

CIFAR-100 carries two label sets: 100 fine classes and 20 coarse superclasses. torchvision exposes only the
fine ones, so the coarse labels are read from the archive's own pickles. The split assembly shared by the
torchvision-backed datasets (``decode_split``, ``assemble``) lives here too; SVHN and STL-10 import it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision import datasets

from mtlssl.data.cache import cached, images_and_targets, resolve_cache
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

CIFAR10_TASKS: list[TaskSpec] = [TaskSpec("label", "multiclass", 10)]
CIFAR100_TASKS: list[TaskSpec] = [TaskSpec("fine", "multiclass", 100), TaskSpec("coarse", "multiclass", 20)]
CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR10_FETCH = f"cifar-10-python.tar.gz from {CIFAR_PAGE}, extracted (it unpacks to cifar-10-batches-py/)"
CIFAR100_FETCH = f"cifar-100-python.tar.gz from {CIFAR_PAGE}, extracted (it unpacks to cifar-100-python/)"
# Bump when the decoded tensors change for the same arguments, so stale cache entries are not reused.
CACHE_VERSION = 1

Split = tuple[Tensor, dict[str, Tensor]]


# --- shared by the torchvision-backed datasets (CIFAR, SVHN, STL-10) ---------------------------------------



def check_args(name: str, channels: int, size: int | None, counts: dict[str, int | None]) -> None:
    """Reject arguments the builders cannot honour, as one clear error, before any file is read."""
    if channels != 3:
        raise UserError(f"data.channels={channels}: {name} images are RGB; set data.channels=3")
    if size is not None and size < 1:
        raise UserError(f"data.size={size} must be a positive number of pixels (or null for the native size)")
    bad = {k: v for k, v in counts.items() if v is not None and v < 0}
    if bad:
        raise UserError(f"data '{name}': split sizes must be >= 0 (or null for all), got {bad}")


def decode_split(name: str, split: str, root: Path, size: int | None, cache_dir: str | Path | None,
                 load: Callable[[], Split], **key: Any) -> Split:
    """``load()``'s uint8 images resized to ``size``, with their targets, cached on disk.

    The key holds everything that changes the tensors: dataset, split, data folder, working size, and any
    extra ``key`` items (e.g. a subsample). Holdout and ``n_train`` are cheap slicing done after the cache, so
    they stay out of the key and one cache entry serves every seed and label budget.
    """
    full_key = {"name": name, "version": CACHE_VERSION, "split": split, "root": str(root.resolve()),
                "size": size, **key}

    def build() -> Split:
        images, targets = load()
        return resize_uint8(images, size), targets

    return cached(full_key, build, cache_dir, images_and_targets)


def assemble(name: str, tasks: Sequence[TaskSpec], train: Split, test: Split, *, n_val: int, n_train: int | None,
             seed: int, mean: Sequence[float], std: Sequence[float], unlabeled: Tensor | None = None) -> Dataset:
    """The four splits from the official train and test sets.

    val: ``n_val`` items held out of the official train split by ``seed``. train: the rest, subsampled to
    ``n_train`` labels (the few-label regime). unlabeled: ``unlabeled`` if given, else every official train
    image (val included, labels dropped): pretraining sees pixels only, never labels.
    """
    train_set, val_set = holdout(train[0], train[1], n_val, seed)
    # A seed distinct from the holdout's, so the label subsample is not a prefix of the holdout's permutation.
    images, targets = subsample(train_set.images, train_set.targets, n_train, seed + 1)
    splits = {
        "train": ImageSet(images, targets),
        "val": val_set,
        "test": ImageSet(test[0], test[1]),
        "unlabeled": ImageSet(train[0] if unlabeled is None else unlabeled),
    }
    return Dataset(name, list(tasks), splits, tuple(mean), tuple(std))


# --- CIFAR ---------------------------------------------------------------------------------------------------


def _archive_labels(path: Path) -> dict[str, Tensor]:
    """The fine and coarse label lists of an original CIFAR-100 pickle (read once: it holds the pixels too).

    The archives are Python 2 pickles: read with latin1, as torchvision reads them, their keys are str.
    """
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    missing = [key for key in ("fine_labels", "coarse_labels") if key not in entry]
    if missing:
        raise UserError(f"'{path}' has no {', '.join(missing)}: it is not the original CIFAR-100 python archive; "
                        f"fetch {CIFAR100_FETCH}")
    return {"fine": labels_tensor(entry["fine_labels"]), "coarse": labels_tensor(entry["coarse_labels"])}


def _load_cifar10(root: Path, train: bool, download: bool) -> Split:
    ds = open_torchvision("cifar10", root, download,
                          lambda: datasets.CIFAR10(str(root), train=train, download=download), CIFAR10_FETCH)
    return to_uint8_nchw(ds.data, "NHWC"), {"label": labels_tensor(ds.targets)}


def _load_cifar100(root: Path, train: bool, download: bool) -> Split:
    """Images and fine labels through torchvision (which checks the files), coarse labels from the archive."""
    ds = open_torchvision("cifar100", root, download,
                          lambda: datasets.CIFAR100(str(root), train=train, download=download), CIFAR100_FETCH)
    fine = labels_tensor(ds.targets)
    path = root / datasets.CIFAR100.base_folder / ("train" if train else "test")
    labels = _archive_labels(path)
    # The coarse labels align with torchvision's images only if this file is the one it read, in the same order.
    if not torch.equal(labels["fine"], fine) or labels["coarse"].shape != fine.shape:
        raise UserError(f"'{path}': its labels do not match what torchvision read; re-extract {CIFAR100_FETCH}")
    return to_uint8_nchw(ds.data, "NHWC"), labels


def _cifar(name: str, tasks: Sequence[TaskSpec], load: Callable[[Path, bool, bool], Split], *, root: str | None,
           download: bool, cache_dir: str | None, seed: int, n_val: int, size: int | None, n_train: int | None,
           channels: int, mean: Sequence[float], std: Sequence[float]) -> Dataset:
    check_args(name, channels, size, {"n_val": n_val, "n_train": n_train})
    folder, cache = data_root(root), resolve_cache(cache_dir)
    train = decode_split(name, "train", folder, size, cache, lambda: load(folder, True, download))
    test = decode_split(name, "test", folder, size, cache, lambda: load(folder, False, download))
    return assemble(name, tasks, train, test, n_val=n_val, n_train=n_train, seed=seed, mean=mean, std=std)


def cifar10(
    root: str | None = None,
    download: bool = False,
    cache_dir: str | None = "auto",
    seed: int = 0,
    n_val: int = 5000,
    size: int | None = 32,
    n_train: int | None = None,
    channels: int = 3,
    mean: Sequence[float] = (0.4914, 0.4822, 0.4465),
    std: Sequence[float] = (0.2470, 0.2435, 0.2616),
) -> Dataset:
    """CIFAR-10 (50k train / 10k test, 32x32): task ``label`` (10 classes).

    Files: ``<root>/cifar-10-batches-py/`` (``root``: ``data.root``, ``$MTLSSL_DATA`` or ``~/.cache/mtlssl/data``).
    ``n_train`` keeps that many labels for training; every train image still feeds ``unlabeled``.
    ``cache_dir``: "auto" for the default cache folder, a path, or None to decode every time.
    """
    return _cifar("cifar10", CIFAR10_TASKS, _load_cifar10, root=root, download=download, cache_dir=cache_dir,
                  seed=seed, n_val=n_val, size=size, n_train=n_train, channels=channels, mean=mean, std=std)


def cifar100(
    root: str | None = None,
    download: bool = False,
    cache_dir: str | None = "auto",
    seed: int = 0,
    n_val: int = 5000,
    size: int | None = 32,
    n_train: int | None = None,
    channels: int = 3,
    mean: Sequence[float] = (0.5071, 0.4865, 0.4409),
    std: Sequence[float] = (0.2673, 0.2564, 0.2762),
) -> Dataset:
    """CIFAR-100 (50k train / 10k test, 32x32): tasks ``fine`` (100 classes) and ``coarse`` (20 superclasses).

    Files: ``<root>/cifar-100-python/`` (``train``, ``test``, ``meta``). The runner picks a task subset.
    Other arguments as for ``cifar10``.
    """
    return _cifar("cifar100", CIFAR100_TASKS, _load_cifar100, root=root, download=download, cache_dir=cache_dir,
                  seed=seed, n_val=n_val, size=size, n_train=n_train, channels=channels, mean=mean, std=std)
