"""SVHN (Street View House Numbers, cropped digits), read with torchvision from the original .mat files.

torchvision reads .mat files with scipy, an optional dependency: a missing scipy is reported as one clear error.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision import datasets

from mtlssl.data.cache import resolve_cache
from mtlssl.data.cifar import Split, assemble, check_args, decode_split
from mtlssl.data.image_set import Dataset
from mtlssl.data.sources import data_root, labels_tensor, open_torchvision, to_uint8_nchw
from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec

SVHN_TASKS: list[TaskSpec] = [TaskSpec("digit", "multiclass", 10)]
# The .mat files sit in their own folder under the data root (torchvision reads them from the folder it is given).
SVHN_FOLDER = "svhn"
SVHN_FETCH = ("train_32x32.mat and test_32x32.mat (extra_32x32.mat too for use_extra=true) from "
              f"http://ufldl.stanford.edu/housenumbers/ into the folder '{SVHN_FOLDER}'")


def _require_scipy() -> None:
    """torchvision imports scipy only after its file checks; fail first, with the fix, rather than mid-load."""
    if importlib.util.find_spec("scipy") is None:
        raise UserError("data 'svhn' needs scipy to read its .mat files: pip install scipy")


def _load_svhn(folder: Path, split: str, download: bool) -> Split:
    """One official split: uint8 [N, 3, 32, 32] and digits 0..9 (torchvision already maps label 10 to 0)."""
    ds = open_torchvision("svhn", folder, download,
                          lambda: datasets.SVHN(str(folder), split=split, download=download), SVHN_FETCH)
    return to_uint8_nchw(ds.data, "NCHW"), {"digit": labels_tensor(ds.labels)}


def svhn(
    root: str | None = None,
    download: bool = False,
    cache_dir: str | None = "auto",
    seed: int = 0,
    n_val: int = 5000,
    size: int | None = 32,
    n_train: int | None = None,
    use_extra: bool = False,
    channels: int = 3,
    mean: Sequence[float] = (0.4377, 0.4438, 0.4728),
    std: Sequence[float] = (0.1980, 0.2010, 0.1970),
) -> Dataset:
    """SVHN (73,257 train / 26,032 test, 32x32): task ``digit`` (10 classes).

    Files: ``<root>/svhn/{train,test}_32x32.mat`` (``root``: ``data.root``, ``$MTLSSL_DATA`` or
    ``~/.cache/mtlssl/data``). ``use_extra`` adds the 531,131 "extra" images (labels dropped) to ``unlabeled``,
    which otherwise holds every official train image. ``n_train`` keeps that many labels for training.
    ``cache_dir``: "auto" for the default cache folder, a path, or None to decode every time.
    """
    check_args("svhn", channels, size, {"n_val": n_val, "n_train": n_train})
    _require_scipy()
    folder, cache = data_root(root) / SVHN_FOLDER, resolve_cache(cache_dir)

    def decode(split: str) -> Split:
        return decode_split("svhn", split, folder, size, cache, lambda: _load_svhn(folder, split, download))

    train, test = decode("train"), decode("test")
    unlabeled = torch.cat([train[0], decode("extra")[0]]) if use_extra else None
    return assemble("svhn", SVHN_TASKS, train, test, n_val=n_val, n_train=n_train, seed=seed, mean=mean, std=std,
                    unlabeled=unlabeled)
