"""What every on-disk dataset shares: where its files live, a clear error when they are missing, a
deterministic validation split, and decoding to cached uint8 tensors.

Datasets are loaded with torchvision's own classes and download flags. ``data.root`` defaults to
``$MTLSSL_DATA``, else ``~/.cache/mtlssl/data``. Small datasets are decoded once into uint8 tensors at
their working size and cached (see ``mtlssl.data.cache``), so an epoch is tensor slicing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mtlssl.data.image_set import ImageSet
from mtlssl.errors import UserError


def data_root(root: str | None) -> Path:
    """``root``, else ``$MTLSSL_DATA``, else ``~/.cache/mtlssl/data``."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("MTLSSL_DATA"):
        return Path(os.environ["MTLSSL_DATA"]).expanduser()
    return Path.home() / ".cache" / "mtlssl" / "data"


def open_torchvision(name: str, root: Path, download: bool, build: Callable[[], Any], fetch: str) -> Any:
    """Call a torchvision dataset constructor; missing or unreadable files become one clear error saying
    what to fetch and where to put it (``fetch``), instead of torchvision's RuntimeError."""
    try:
        return build()
    except (RuntimeError, FileNotFoundError, OSError) as err:
        how = "download failed or is impossible here" if download else "download is off (data.download=false)"
        raise UserError(f"data '{name}': its files are missing or unreadable under '{root}' ({how}: {err}). "
                        f"Fetch {fetch} and put it under {root}, or set data.root=<folder> / $MTLSSL_DATA, "
                        "or data.download=true where the network allows") from err


def to_uint8_nchw(images: np.ndarray | Tensor, layout: str) -> Tensor:
    """uint8 images in ``layout`` ("NHWC", "NCHW" or "NHW") -> a contiguous uint8 [N, C, H, W] tensor."""
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {x.dtype}")
    if layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    elif layout == "NHW":
        x = x.unsqueeze(1)
    elif layout != "NCHW":
        raise ValueError(f"unknown layout {layout}")
    return x.contiguous()


def resize_uint8(images: Tensor, size: int | None, chunk: int = 4096) -> Tensor:
    """Antialiased bilinear resize of uint8 [N, C, H, W] to size x size (None or the same size: unchanged)."""
    if size is None or (images.shape[-2] == size and images.shape[-1] == size):
        return images
    out = [F.interpolate(images[i : i + chunk].float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
           for i in range(0, images.shape[0], chunk)]
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def holdout(images: Tensor, targets: dict[str, Tensor], n_val: int, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split a labelled set into (train, val) with ``n_val`` items drawn by ``seed``: the same every run."""
    n = images.shape[0]
    if not 0 <= n_val < n:
        raise UserError(f"data.n_val={n_val} must be >= 0 and smaller than the {n} training images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val].sort().values, order[n_val:].sort().values
    return (ImageSet(images[train], {k: v[train] for k, v in targets.items()}),
            ImageSet(images[val], {k: v[val] for k, v in targets.items()}))


def subsample(images: Tensor, targets: dict[str, Tensor], n: int | None, seed: int) -> tuple[Tensor, dict[str, Tensor]]:
    """At most ``n`` items drawn by ``seed`` (None: all), in their original order."""
    if n is None or n >= images.shape[0]:
        return images, targets
    keep = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images[keep], {k: v[keep] for k, v in targets.items()}


def labels_tensor(labels: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    return torch.as_tensor(np.asarray(labels), dtype=torch.long)
