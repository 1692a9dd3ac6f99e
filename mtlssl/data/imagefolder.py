"""Image folders in torchvision's ImageFolder layout, plus the file decoding that the csv manifest and
CelebA builders share: image files -> cached uint8 [N, C, H, W] tensors at the working size.

Layouts (the task ``label`` is multiclass, classes sorted by folder name as ``torchvision.datasets.ImageFolder``):

- ``root/train/<class>/*`` (with optional ``root/val/<class>/*`` and ``root/test/<class>/*``): the folders are
  the splits; a missing ``val`` or ``test`` folder is held out of ``train`` (``n_val`` / ``n_test`` images).
- ``root/<class>/*``: one pool, split deterministically by ``seed`` into train / val / test.

Every image is converted to RGB (or L for ``channels=1``), center-cropped to a square (``center_crop=True``, so
faces and objects keep their aspect ratio; ``False`` squashes instead) and resized to ``size`` x ``size``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from mtlssl.data.cache import cached, resolve_cache, uint8_images
from mtlssl.data.image_set import Dataset, ImageSet
from mtlssl.data.sources import holdout, labels_tensor, resize_uint8, subsample
from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIL_MODES = {1: "L", 3: "RGB"}
DEFAULT_HOLDOUT = 0.1  # share of a pool held out for val (and for test) when no count is given
DECODE_VERSION = 1  # bump when decoding changes, so stale cache entries are not reused
SPLIT_FOLDERS = ("train", "val", "test")

Where = Callable[[int], str]  # item index -> where it came from, for error messages ("x.csv row 3, column 'img'")


# --- shared by the file-based builders -------------------------------------------------------------------


def check_pixels(name: str, channels: int, mean: Sequence[float], std: Sequence[float]) -> None:
    """Reject channel counts the decoder cannot produce, and statistics of the wrong length."""
    if channels not in PIL_MODES:
        raise UserError(f"data '{name}': data.channels={channels} is not supported; use 3 (RGB) or 1 (grey)")
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"data '{name}': data.mean and data.std need {channels} values each (one per channel), "
                        f"got {list(mean)} and {list(std)}")



def decode_image(path: str | Path, size: int, mode: str, center_crop: bool) -> Tensor:
    """One image file -> uint8 [C, size, size]."""
    with Image.open(path) as img:
        # JPEG can decode at a reduced scale (never below the requested size): much faster for big photos.
        img.draft(mode, (size, size))
        pixels = np.asarray(img.convert(mode))
    x = torch.from_numpy(pixels.copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    if center_crop:
        h, w = x.shape[-2:]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, top : top + side, left : left + side]
    return resize_uint8(x.unsqueeze(0).contiguous(), size)[0]


class ImageFiles(TorchDataset):
    """Decodes one file per item for a DataLoader. A file that cannot be decoded yields a blank image and the
    error text, so the main process can name the row or folder it came from instead of a worker traceback."""

    def __init__(self, paths: Sequence[str | Path], size: int, channels: int, center_crop: bool) -> None:
        self.paths, self.size, self.channels, self.center_crop = [str(p) for p in paths], size, channels, center_crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        try:
            return decode_image(self.paths[index], self.size, PIL_MODES[self.channels], self.center_crop), ""
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's decode errors
            return torch.zeros(self.channels, self.size, self.size, dtype=torch.uint8), f"{type(err).__name__}: {err}"


FileId = tuple[int, int] | str  # (st_dev, st_ino), or the real path where a file system has no inode numbers


def file_id(path: Path) -> FileId:
    """What makes two paths the same file or folder: its device and inode (a symlink or hard link shares them)."""
    st = path.stat()  # follows symlinks
    return (st.st_dev, st.st_ino) if st.st_ino else os.path.realpath(path)


def check_distinct_files(paths: Sequence[Path], where: Where) -> None:
    """Each image file once: two entries that are the same file (the same path written twice, a symlink or a
    hard link to it) would count an image twice, or leak it from one split into another (e.g. test into train).
    A missing file is left to ``files_digest``, which names where it is listed."""
    first: dict[FileId, int] = {}
    for i, path in enumerate(paths):
        try:
            j = first.setdefault(file_id(path), i)
        except OSError:
            continue
        if j != i:
            raise UserError(f"{where(i)}: image file '{path}' is the same file as '{paths[j]}' ({where(j)}); list "
                            "each image once (a symlink or hard link counts as the same file): an image in two "
                            "splits leaks from one into the other, and one listed twice counts twice")


def files_digest(paths: Sequence[Path], where: Where) -> str:
    """A hash of the file list with each file's size and modification time (a replaced file is re-decoded);
    a missing file is an error naming where it was listed."""
    h = hashlib.sha256()
    for i, path in enumerate(paths):
        try:
            stat = path.stat()
        except OSError as err:
            raise UserError(f"{where(i)}: image file '{path}' cannot be read ({err}); fix the path or add the "
                            "file") from err
        if not path.is_file():
            raise UserError(f"{where(i)}: '{path}' is not a file; point it at an image file")
        h.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def decode_files(paths: Sequence[Path], size: int, channels: int, center_crop: bool, num_workers: int,
                 where: Where, batch_size: int = 64) -> Tensor:
    """Decode ``paths`` with ``num_workers`` DataLoader workers into uint8 [N, C, size, size]."""
    if num_workers < 0:
        raise UserError(f"data.num_workers={num_workers} must be >= 0 (0 decodes in the main process)")
    if not paths:
        return torch.zeros((0, channels, size, size), dtype=torch.uint8)
    # Every DataLoader iterator draws a base seed for its workers, from the global generator unless given one.
    # Decoding is not random, but that draw happens only when images are decoded (a cold cache), and it would
    # shift the model's initial weights: give it a generator of its own.
    loader = DataLoader(ImageFiles(paths, size, channels, center_crop), batch_size=batch_size,
                        num_workers=num_workers, generator=torch.Generator().manual_seed(0))
    chunks, start = [], 0
    for images, errors in loader:
        for offset, error in enumerate(errors):
            if error:
                i = start + offset
                raise UserError(f"{where(i)}: image file '{paths[i]}' cannot be decoded ({error}); replace it "
                                "or remove its entry")
        chunks.append(images)
        start += images.shape[0]
    return torch.cat(chunks)


def load_images(name: str, paths: Sequence[Path], *, size: int, channels: int, center_crop: bool,
                num_workers: int, cache_dir: str | Path | None, where: Where) -> Tensor:
    """Decoded images of ``paths``, cached under the file list's digest and the decoding settings."""
    if size < 1:
        raise UserError(f"data.size={size} must be a positive number of pixels")
    key = {"name": name, "version": DECODE_VERSION, "files": files_digest(paths, where), "n": len(paths),
           "size": size, "channels": channels, "center_crop": center_crop}
    log.info("data '%s': %d image files at %dx%d", name, len(paths), size, size)
    return cached(key, lambda: decode_files(paths, size, channels, center_crop, num_workers, where),
                  resolve_cache(cache_dir), uint8_images)


def holdout_count(n: int | None, pool: int) -> int:
    """``n`` as given, else ``DEFAULT_HOLDOUT`` of the pool (at least one image when the pool has three)."""
    if n is not None:
        return n
    return max(1 if pool >= 3 else 0, round(DEFAULT_HOLDOUT * pool))


def split_pool(pool: ImageSet, n_val: int | None, n_test: int | None, seed: int) -> dict[str, ImageSet]:
    """A deterministic train / val / test split of one labelled pool (test first, then val, by ``seed``)."""
    rest, test = holdout(pool.images, pool.targets, holdout_count(n_test, len(pool)), seed)
    train, val = holdout(rest.images, rest.targets, holdout_count(n_val, len(pool)), seed + 1)
    return {"train": train, "val": val, "test": test}


def finish_splits(splits: dict[str, ImageSet], n_train: int | None, seed: int,
                  extra_unlabeled: Tensor | None = None) -> dict[str, ImageSet]:
    """Add the ``unlabeled`` split pretraining reads (all train images, labels dropped, plus any extra
    unlabelled images) and then cut the labelled train split to ``n_train`` images (the few-label regime)."""
    train = splits["train"]
    pool = train.images if extra_unlabeled is None else torch.cat([train.images, extra_unlabeled])
    if n_train is not None and n_train < 0:
        raise UserError(f"data.n_train={n_train} must be >= 0 (or null for all)")
    images, targets = subsample(train.images, train.targets, n_train, seed)
    return {**splits, "train": ImageSet(images, targets), "unlabeled": ImageSet(pool)}


# --- the imagefolder builder ------------------------------------------------------------------------------


class FolderWalk:
    """The folders one imagefolder build has read. Symlinked folders are followed (a dataset assembled from
    links is common), but a folder reached a second time is refused: through a symlink loop it would be read
    again and again (24 images became 984), and through a second link its images would count twice, under two
    classes (mislabelled) or in two splits (leaked). Refused rather than skipped: which of the two places an
    image belongs to is the user's call, not the walk order's."""

    def __init__(self) -> None:
        self.read: dict[FileId, Path] = {}

    def enter(self, folder: Path) -> None:
        try:
            first = self.read.setdefault(file_id(folder), folder)
        except OSError as err:
            raise UserError(f"imagefolder: folder '{folder}' cannot be read ({err}); fix its permissions or "
                            "remove it") from err
        if first != folder:
            # Whichever was walked first, one of the two paths goes through a symlink: name both.
            raise UserError(f"imagefolder: '{folder}' and '{first}' are one folder, reached twice (a symlink loop, "
                            "or two links to one folder): its images would be read twice, under two classes or "
                            "in two splits. Remove the link, or replace it by the files it should add")

    def entries(self, folder: Path) -> list[os.DirEntry[str]]:
        """``folder``'s entries sorted by name, once the folder is entered."""
        self.enter(folder)
        try:
            with os.scandir(folder) as found:
                return sorted(found, key=lambda e: e.name)
        except OSError as err:
            raise UserError(f"imagefolder: folder '{folder}' cannot be read ({err}); fix its permissions or "
                            "remove it") from err


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """A folder, or a symlink to one (as ``os.walk`` counts them); an entry that cannot be examined is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _image_files(top: Path, walk: FolderWalk) -> list[Path]:
    """Image files under ``top`` in ``torchvision.datasets.ImageFolder``'s order (folders sorted by path, files
    by name; symlinked folders followed), every folder read once (see ``FolderWalk``)."""
    listed: list[tuple[str, list[str]]] = []
    pending = [top]
    while pending:
        folder = pending.pop()
        entries = walk.entries(folder)
        pending.extend(Path(e.path) for e in entries if _is_dir(e))
        listed.append((str(folder), [e.name for e in entries
                                     if not _is_dir(e) and has_file_allowed_extension(e.name, IMG_EXTENSIONS)]))
    return [Path(folder) / name for folder, names in sorted(listed) for name in names]


def _folder_items(folder: Path, class_to_idx: dict[str, int] | None,
                  walk: FolderWalk) -> tuple[list[Path], Tensor, dict[str, int]]:
    """Image paths and class ids under ``folder/<class>/``; classes from the folder unless given (val/test
    reuse train's classes; a class absent from them is fine, an unknown one is an error)."""
    given = class_to_idx is not None
    found = [e.name for e in walk.entries(folder) if _is_dir(e)]
    hint = f"expected image files ({', '.join(IMG_EXTENSIONS)}) in one sub-folder per class"
    if not found:
        raise UserError(f"imagefolder: no class folder in '{folder}'; {hint}")
    if class_to_idx is None:
        class_to_idx = {name: i for i, name in enumerate(found)}
    unknown = sorted(set(found) - set(class_to_idx))
    if unknown:
        raise UserError(f"imagefolder: class folder(s) {unknown} in '{folder}' are not among the training "
                        f"classes {sorted(class_to_idx)}; rename or remove them")
    paths: list[Path] = []
    labels: list[int] = []
    for name in found:
        files = _image_files(folder / name, walk)
        if not files and not given:
            raise UserError(f"imagefolder: class folder '{folder / name}' holds no image file; {hint}")
        paths += files
        labels += [class_to_idx[name]] * len(files)
    return paths, labels_tensor(labels), class_to_idx


def _layout(root: Path) -> dict[str, Path]:
    """The split folders present: ``train`` (and ``val``/``test``) if ``root/train`` exists, else the pool."""
    if not root.is_dir():
        raise UserError(f"imagefolder: data.root='{root}' is not a folder; point it at root/<class>/*.jpg or "
                        "root/train/<class>/*.jpg")
    if (root / "train").is_dir():
        return {s: root / s for s in SPLIT_FOLDERS if (root / s).is_dir()}
    return {"pool": root}


def imagefolder(
    root: str,
    size: int = 64,
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
    """Images in class folders (see the module doc for the layouts) with one multiclass task, ``label``.

    ``n_val`` / ``n_test``: images held out when a split has no folder (None: 10% of the pool each);
    ``n_train``: labelled training images kept (None: all; the ``unlabeled`` split always has all of them).
    """
    check_pixels("imagefolder", channels, mean, std)
    folder = Path(root).expanduser()
    class_to_idx: dict[str, int] | None = None
    layout = _layout(folder)
    walk = FolderWalk()
    walk.enter(folder)  # a link back to the root is a loop too
    listed: dict[str, tuple[list[Path], Tensor]] = {}
    for split, path in layout.items():
        paths, labels, class_to_idx = _folder_items(path, class_to_idx, walk)
        listed[split] = paths, labels
    every = [(path, split) for split, (paths, _) in listed.items() for path in paths]
    check_distinct_files([p for p, _ in every], lambda i: f"imagefolder '{folder}', split '{every[i][1]}'")
    loaded: dict[str, ImageSet] = {}
    for split, (paths, labels) in listed.items():
        images = load_images("imagefolder", paths, size=size, channels=channels, center_crop=center_crop,
                             num_workers=num_workers, cache_dir=cache_dir,
                             where=lambda i, s=split: f"imagefolder '{folder}', split '{s}'")
        loaded[split] = ImageSet(images, {"label": labels})
    assert class_to_idx is not None
    if len(class_to_idx) < 2:
        raise UserError(f"imagefolder: '{folder}' has {len(class_to_idx)} class folder; a classification "
                        "task needs at least 2")
    if "pool" in loaded:
        splits = split_pool(loaded["pool"], n_val, n_test, seed)
    else:
        splits = _fill_missing_splits(loaded, n_val, n_test, seed)
    task = TaskSpec("label", "multiclass", len(class_to_idx))
    return Dataset("imagefolder", [task], finish_splits(splits, n_train, seed), tuple(mean), tuple(std))


def _fill_missing_splits(loaded: dict[str, ImageSet], n_val: int | None, n_test: int | None,
                         seed: int) -> dict[str, ImageSet]:
    """Hold a missing ``test`` and then a missing ``val`` folder out of ``train``."""
    splits = dict(loaded)
    for split, n, offset in (("test", n_test, 0), ("val", n_val, 1)):
        if split not in splits:
            train = splits["train"]
            rest, held = holdout(train.images, train.targets, holdout_count(n, len(train)), seed + offset)
            splits.update(train=rest, **{split: held})
            log.info("imagefolder: no '%s' folder; held %d training images out as %s", split, len(held), split)
    return {s: splits[s] for s in SPLIT_FOLDERS}
