"""CelebA (aligned and cropped faces) with its 40 binary attributes, each its own task.

Loaded with ``torchvision.datasets.CelebA`` from ``<root>/celeba/``: ``img_align_celeba/*.jpg``,
``list_attr_celeba.txt``, ``list_eval_partition.txt``, ``identity_CelebA.txt``, ``list_bbox_celeba.txt`` and
``list_landmarks_align_celeba.txt``. torchvision checks the md5 of the five text files (not of the images) and
that ``img_align_celeba/`` exists; it reads all five even for attributes alone.

The official partition gives the splits (train / valid / test -> train / val / test). The 178x218 faces are
center-cropped to 178x178 (the face stays whole) and resized to ``size``. The ``unlabeled`` split pretraining
reads is the official train images (``n_unlabeled`` of them), labels dropped; the labelled train split is
``n_train`` of those. Mean/std default to ImageNet's statistics (not measured on CelebA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import CelebA

from mtlssl.data.image_set import Dataset, ImageSet
from mtlssl.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_distinct_files,
    check_pixels,
    finish_splits,
    load_images,
)
from mtlssl.data.sources import data_root, open_torchvision, subsample
from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec

FETCH = ("CelebA's img_align_celeba/ (unzipped img_align_celeba.zip), list_attr_celeba.txt, "
         "list_eval_partition.txt, identity_CelebA.txt, list_bbox_celeba.txt and list_landmarks_align_celeba.txt "
         "(torchvision checks the text files' md5) from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html into "
         "a folder named celeba")
OFFICIAL_SPLITS = {"train": "train", "val": "valid", "test": "test"}


def _open(root: Path, split: str, download: bool) -> CelebA:
    """torchvision's CelebA for one official split; missing or corrupt files become a UserError."""
    return open_torchvision("celeba", root / CelebA.base_folder, download,
                            lambda: CelebA(str(root), split=split, target_type="attr", download=download), FETCH)


def attribute_names(ds: CelebA) -> list[str]:
    """The attribute names in column order. The official header line ends with a space, which torchvision
    reads as one more, empty, name: it is dropped."""
    names = [n for n in ds.attr_names if n]
    if len(names) != ds.attr.shape[1]:
        raise UserError(f"celeba: list_attr_celeba.txt names {len(names)} attributes for {ds.attr.shape[1]} "
                        "label columns; re-fetch the file")
    return names


def _columns(names: list[str], attributes: Sequence[str] | None) -> list[int]:
    """Column indices of the chosen attributes (None or empty: all), in the order given."""
    if not attributes:
        return list(range(len(names)))
    unknown = [a for a in attributes if a not in names]
    if unknown:
        raise UserError(f"celeba: unknown attribute(s) {unknown} in data.attributes; CelebA has: {', '.join(names)}")
    if len(set(attributes)) != len(attributes):
        raise UserError(f"celeba: data.attributes={list(attributes)} names an attribute twice; list each once")
    return [names.index(a) for a in attributes]


def _chosen(ds: CelebA, split: str, n: int | None, seed: int) -> tuple[Tensor, list[Path]]:
    """The indices and image paths of up to ``n`` images of one split, drawn by ``seed`` (only those are
    decoded)."""
    if n is not None and n < 0:
        raise UserError(f"celeba: the {split} split size must be >= 0 (or null for all), got {n}")
    keep, _ = subsample(torch.arange(len(ds.filename)), {}, n, seed)
    folder = Path(ds.root) / ds.base_folder / "img_align_celeba"
    return keep, [folder / ds.filename[i] for i in keep.tolist()]


def _split(ds: CelebA, split: str, keep: Tensor, paths: list[Path], columns: list[int], names: list[str],
           decode: Callable[..., Tensor]) -> ImageSet:
    """The chosen images of one split, with one float {0, 1} target [N, 1] per chosen attribute."""
    attr = ds.attr[:, columns].float()
    images = decode(paths, where=lambda i: f"celeba split '{split}'")
    return ImageSet(images, {names[c]: attr[keep, j : j + 1] for j, c in enumerate(columns)})


def celeba(
    root: str | None = None,
    download: bool = False,
    attributes: list[str] | None = None,
    size: int = 64,
    n_unlabeled: int | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    center_crop: bool = True,
    num_workers: int = 2,
    cache_dir: str | None = "auto",
    channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Dataset:
    """CelebA with one binary task per attribute (``attributes``: a subset by name; None: all 40).

    ``n_unlabeled``: official train images decoded (None: all 162,770, about 2 GB at size 64);
    ``n_train``: how many of them keep their labels (None: all); ``n_val`` / ``n_test``: images of the
    official valid / test splits (None: all). Every subset is drawn by ``seed``.
    """
    check_pixels("celeba", channels, mean, std)
    folder = data_root(root)
    decode = partial(load_images, "celeba", size=size, channels=channels, center_crop=center_crop,
                     num_workers=num_workers, cache_dir=cache_dir)
    counts = {"train": n_unlabeled, "val": n_val, "test": n_test}
    opened = {split: _open(folder, official, download) for split, official in OFFICIAL_SPLITS.items()}
    chosen = {split: _chosen(ds, split, counts[split], seed) for split, ds in opened.items()}
    # The partition file lists each image once; a file named twice, or linked into another split, is refused.
    every = [(path, split) for split, (_, paths) in chosen.items() for path in paths]
    check_distinct_files([p for p, _ in every], lambda i: f"celeba split '{every[i][1]}'")
    splits: dict[str, ImageSet] = {}
    names: list[str] = []
    columns: list[int] = []
    for split, ds in opened.items():
        names = attribute_names(ds)
        columns = columns or _columns(names, list(attributes) if attributes else None)
        splits[split] = _split(ds, split, *chosen[split], columns, names, decode)
    tasks = [TaskSpec(names[c], "binary", 1) for c in columns]
    return Dataset("celeba", tasks, finish_splits(splits, n_train, seed + 1), tuple(mean), tuple(std))
