"""STL-10 builder on tiny fake binary files written in the real format (never downloaded).

Checksums: torchvision's ``STL10._check_integrity`` compares every file's md5 with the real files', which tiny
fake files cannot match. The ``no_md5`` fixture replaces ``torchvision.datasets.utils.check_md5`` (which
``check_integrity`` calls) with one that accepts any file. Only the md5 comparison is skipped: the file-exists
check stays, so a missing file is still refused exactly as it is on a real machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from mtlssl.config import config_dir
from mtlssl.data.image_set import Dataset
from mtlssl.data.stl10 import stl10
from mtlssl.errors import UserError

N = {"train": 20, "test": 10, "unlabeled": 24}
N_VAL = 4


@pytest.fixture(autouse=True)
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept the fake files' md5 (see the module docstring); files must still exist."""
    monkeypatch.setattr("torchvision.datasets.utils.check_md5", lambda *args, **kwargs: True)


def write_stl10(root: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """stl10_binary/{train,test}_X.bin, {train,test}_y.bin, unlabeled_X.bin as the originals: images as raw
    uint8 in column-major order (each channel stored [W, H]), labels as uint8 1..10.
    Returns split -> (images [N, 3, 96, 96] row-major, labels 0..9 or None)."""
    rng, folder, written = np.random.default_rng(seed), root / "stl10_binary", {}
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in N.items():
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        labels = None
        if split != "unlabeled":
            labels = rng.integers(0, 10, n)
            (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        written[split] = (images, labels)
    return written


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_stl10(tmp_path)
    return tmp_path


def rows(images: Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_splits_sizes_labels_and_pixels(tmp_path: Path) -> None:
    written = write_stl10(tmp_path)
    data = stl10(root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": N["train"] - N_VAL, "val": N_VAL, "test": N["test"],
                     "unlabeled": N["train"] + N["unlabeled"]}
    assert [(t.name, t.num_outputs) for t in data.tasks] == [("label", 10)]
    assert not rows(data.split("train").images) & rows(data.split("val").images)
    # Native 96x96 by default; pixels come back row-major (not transposed), labels shifted to 0..9.
    images, labels = written["test"]
    assert torch.equal(data.split("test").images, torch.from_numpy(images))
    assert data.split("test").targets["label"].tolist() == labels.tolist()
    pool = data.split("unlabeled")
    assert pool.targets == {}
    assert torch.equal(pool.images, torch.from_numpy(np.concatenate([written["train"][0], written["unlabeled"][0]])))
    for split in ("train", "val", "test"):
        target = data.split(split).targets["label"]
        assert target.dtype == torch.int64 and 0 <= int(target.min()) and int(target.max()) < 10


@pytest.mark.parametrize("size", [32, 64])
def test_images_are_uint8_at_the_working_size(root: Path, size: int) -> None:
    data = stl10(root=str(root), cache_dir=None, n_val=N_VAL, size=size)
    for split in data.splits.values():
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape[1:]) == (3, size, size)


def test_n_unlabeled_subsamples_the_unlabelled_split_by_seed(root: Path) -> None:
    def pool(seed: int) -> Tensor:
        return stl10(root=str(root), cache_dir=None, n_val=N_VAL, n_unlabeled=6, seed=seed).split("unlabeled").images

    full = stl10(root=str(root), cache_dir=None, n_val=N_VAL).split("unlabeled").images
    a, b, c = pool(0), pool(0), pool(1)
    assert len(a) == N["train"] + 6 and torch.equal(a, b) and not torch.equal(a, c)
    assert rows(a) <= rows(full)


def test_n_train_subsamples_labels_but_keeps_the_whole_pool(root: Path) -> None:
    full = stl10(root=str(root), cache_dir=None, n_val=N_VAL)
    few = stl10(root=str(root), cache_dir=None, n_val=N_VAL, n_train=5)
    assert len(few.split("train")) == 5 and rows(few.split("train").images) <= rows(full.split("train").images)
    assert torch.equal(few.split("unlabeled").images, full.split("unlabeled").images)


def test_splits_are_deterministic_per_seed(root: Path) -> None:
    def build(seed: int) -> Dataset:
        return stl10(root=str(root), cache_dir=None, n_val=N_VAL, n_train=8, size=32, seed=seed)

    a, b, c = build(5), build(5), build(6)
    for split in ("train", "val"):
        assert torch.equal(a.split(split).images, b.split(split).images)
        assert torch.equal(a.split(split).targets["label"], b.split(split).targets["label"])
    assert not torch.equal(a.split("val").images, c.split("val").images)


def test_cache_round_trip(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = stl10(root=str(root), cache_dir=str(cache), n_val=N_VAL, size=32, n_unlabeled=10)
    assert len(list(cache.glob("stl10-*.pt"))) == 3  # train, test, unlabeled
    for path in (root / "stl10_binary").iterdir():  # with the files gone, only the cache can answer
        path.unlink()
    again = stl10(root=str(root), cache_dir=str(cache), n_val=N_VAL, size=32, n_unlabeled=10)
    for name, split in first.splits.items():
        assert torch.equal(split.images, again.splits[name].images)
        assert all(torch.equal(t, again.splits[name].targets[k]) for k, t in split.targets.items())
    with pytest.raises(UserError):  # another pool subsample is another key: it needs the files
        stl10(root=str(root), cache_dir=str(cache), n_val=N_VAL, size=32, n_unlabeled=11)


def test_missing_files_say_what_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="stl10_binary.tar.gz") as err:
        stl10(root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    assert "cs.stanford.edu/~acoates/stl10" in str(err.value)


def test_missing_unlabeled_file_is_refused(root: Path) -> None:
    (root / "stl10_binary" / "unlabeled_X.bin").unlink()
    with pytest.raises(UserError, match="stl10_binary"):
        stl10(root=str(root), cache_dir=None, n_val=N_VAL)


def test_config_instantiates(root: Path) -> None:
    conf = OmegaConf.load(config_dir() / "data" / "stl10.yaml")
    assert conf.channels == 3 and conf.size == 96 and len(conf.mean) == len(conf.std) == 3
    # n_val overridden: the default (500) is more than the fake files hold.
    data = instantiate(conf, root=str(root), cache_dir=None, n_val=N_VAL)
    assert isinstance(data, Dataset) and [t.name for t in data.tasks] == ["label"]
    for split in ("train", "val", "test"):
        assert set(data.split(split).targets) == {"label"}
