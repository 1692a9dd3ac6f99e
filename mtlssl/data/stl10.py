"""STL-10, read with torchvision from the original binary files: few labels and a large unlabelled pool.

Built for self-supervised pretraining: 5k labelled train images, 8k test images and 100k unlabelled images
(from a broader distribution than the 10 classes) at 96x96.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision import datasets

from mtlssl.data.cache import resolve_cache
from mtlssl.data.cifar import Split, assemble, check_args, decode_split
from mtlssl.data.image_set import Dataset
from mtlssl.data.sources import data_root, labels_tensor, open_torchvision, subsample, to_uint8_nchw
from mtlssl.tasks import TaskSpec

STL10_TASKS: list[TaskSpec] = [TaskSpec("label", "multiclass", 10)]
STL10_FETCH = ("stl10_binary.tar.gz from https://cs.stanford.edu/~acoates/stl10/, extracted "
               "(it unpacks to stl10_binary/)")


def _open(root: Path, split: str, download: bool) -> datasets.STL10:
    return open_torchvision("stl10", root, download,
                            lambda: datasets.STL10(str(root), split=split, download=download), STL10_FETCH)


def _load_labelled(root: Path, split: str, download: bool) -> Split:
    """"train" or "test": uint8 [N, 3, 96, 96] (torchvision undoes the files' column-major order), labels 0..9."""
    ds = _open(root, split, download)
    return to_uint8_nchw(ds.data, "NCHW"), {"label": labels_tensor(ds.labels)}


def _load_unlabeled(root: Path, download: bool, n: int | None, seed: int) -> Split:
    """The unlabelled split, subsampled to ``n`` images before the copy: 100k images are 2.8 GB at 96x96."""
    data = torch.as_tensor(_open(root, "unlabeled", download).data)  # a view: no copy yet
    images, _ = subsample(data, {}, n, seed)
    return to_uint8_nchw(images, "NCHW"), {}


def stl10(
    root: str | None = None,
    download: bool = False,
    cache_dir: str | None = "auto",
    seed: int = 0,
    n_val: int = 500,
    size: int | None = 96,
    n_train: int | None = None,
    n_unlabeled: int | None = None,
    channels: int = 3,
    mean: Sequence[float] = (0.4467, 0.4398, 0.4066),
    std: Sequence[float] = (0.2603, 0.2566, 0.2713),
) -> Dataset:
    """STL-10 (5k train / 8k test / 100k unlabelled, native 96x96): task ``label`` (10 classes).

    Files: ``<root>/stl10_binary/`` (``root``: ``data.root``, ``$MTLSSL_DATA`` or ``~/.cache/mtlssl/data``).
    ``size``: working size (96 native; 64 or 32 are cheaper). ``unlabeled`` holds the official train images
    plus the unlabelled split, subsampled by ``seed`` to ``n_unlabeled`` images (None: all 100k) — the usual
    "train+unlabeled" pretraining pool. ``n_train`` keeps that many labels for training.
    ``cache_dir``: "auto" for the default cache folder, a path, or None to decode every time.
    """
    check_args("stl10", channels, size, {"n_val": n_val, "n_train": n_train, "n_unlabeled": n_unlabeled})
    folder, cache = data_root(root), resolve_cache(cache_dir)
    train = decode_split("stl10", "train", folder, size, cache, lambda: _load_labelled(folder, "train", download))
    test = decode_split("stl10", "test", folder, size, cache, lambda: _load_labelled(folder, "test", download))
    # The subsample happens before the cache (to spare memory), so it is part of the key; the seed matters
    # only when there is a subsample, so the full pool is cached once for every seed.
    pool_seed = None if n_unlabeled is None else seed
    pool = decode_split("stl10", "unlabeled", folder, size, cache,
                        lambda: _load_unlabeled(folder, download, n_unlabeled, seed),
                        n_unlabeled=n_unlabeled, seed=pool_seed)[0]
    return assemble("stl10", STL10_TASKS, train, test, n_val=n_val, n_train=n_train, seed=seed, mean=mean, std=std,
                    unlabeled=torch.cat([train[0], pool]))
