"""SVHN builder on tiny fake .mat files written in the real format with scipy (never downloaded).

Checksums: torchvision's ``SVHN._check_integrity`` compares the file's md5 with the real file's, which tiny fake
files cannot match. The ``no_md5`` fixture replaces ``torchvision.datasets.utils.check_md5`` (which
``check_integrity`` calls) with one that accepts any file. Only the md5 comparison is skipped: the file-exists
check stays, so a missing file is still refused exactly as it is on a real machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from mtlssl.config import config_dir
from mtlssl.data.image_set import Dataset
from mtlssl.data.svhn import svhn
from mtlssl.errors import UserError

scipy_io = pytest.importorskip("scipy.io", reason="SVHN's .mat files need scipy")

N = {"train": 30, "test": 16, "extra": 20}
N_VAL = 5


@pytest.fixture(autouse=True)
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept the fake files' md5 (see the module docstring); files must still exist."""
    monkeypatch.setattr("torchvision.datasets.utils.check_md5", lambda *args, **kwargs: True)


def write_svhn(root: Path, splits: tuple[str, ...] = ("train", "test"), seed: int = 0) -> dict[str, tuple]:
    """<root>/svhn/<split>_32x32.mat as the originals: X uint8 [32, 32, 3, N] (H, W, C, N), y uint8 [N, 1] in
    1..10 where 10 stands for the digit 0. Returns split -> (images [N, 3, 32, 32], digits 0..9)."""
    rng, folder, written = np.random.default_rng(seed), root / "svhn", {}
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        images = rng.integers(0, 256, size=(N[split], 3, 32, 32), dtype=np.uint8)
        y = rng.integers(1, 11, size=(N[split], 1)).astype(np.uint8)
        y[0] = 10  # at least one zero digit, to see the 10 -> 0 mapping
        scipy_io.savemat(folder / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": y})
        written[split] = (images, y[:, 0] % 10)
    return written


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_svhn(tmp_path)
    return tmp_path


def rows(images: Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_splits_sizes_digits_and_pixels(tmp_path: Path) -> None:
    written = write_svhn(tmp_path)
    data = svhn(root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": N["train"] - N_VAL, "val": N_VAL, "test": N["test"], "unlabeled": N["train"]}
    assert [(t.name, t.num_outputs) for t in data.tasks] == [("digit", 10)]
    train, val = data.split("train"), data.split("val")
    assert not rows(train.images) & rows(val.images)
    # Pixels and digits come back exactly, in file order, with the files' 10 read as digit 0.
    images, digits = written["test"]
    assert torch.equal(data.split("test").images, torch.from_numpy(images))
    assert data.split("test").targets["digit"].tolist() == digits.tolist()
    assert torch.equal(data.split("unlabeled").images, torch.from_numpy(written["train"][0]))
    for split in ("train", "val", "test"):
        target = data.split(split).targets["digit"]
        assert target.dtype == torch.int64 and 0 <= int(target.min()) and int(target.max()) < 10


def test_images_are_uint8_at_the_working_size(root: Path) -> None:
    data = svhn(root=str(root), cache_dir=None, n_val=N_VAL, size=20)
    for split in data.splits.values():
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape[1:]) == (3, 20, 20)


def test_use_extra_adds_the_extra_split_to_the_pool(tmp_path: Path) -> None:
    written = write_svhn(tmp_path, ("train", "test", "extra"))
    data = svhn(root=str(tmp_path), cache_dir=None, n_val=N_VAL, use_extra=True)
    pool = data.split("unlabeled")
    assert len(pool) == N["train"] + N["extra"] and pool.targets == {}
    assert torch.equal(pool.images[N["train"]:], torch.from_numpy(written["extra"][0]))
    assert len(data.split("train")) == N["train"] - N_VAL  # extra never adds labels


def test_n_train_subsamples_labels_but_keeps_the_whole_pool(root: Path) -> None:
    full = svhn(root=str(root), cache_dir=None, n_val=N_VAL)
    few = svhn(root=str(root), cache_dir=None, n_val=N_VAL, n_train=7)
    assert len(few.split("train")) == 7 and rows(few.split("train").images) <= rows(full.split("train").images)
    assert torch.equal(few.split("unlabeled").images, full.split("unlabeled").images)


def test_splits_are_deterministic_per_seed(root: Path) -> None:
    def build(seed: int) -> Dataset:
        return svhn(root=str(root), cache_dir=None, n_val=N_VAL, n_train=10, seed=seed)

    a, b, c = build(3), build(3), build(4)
    for split in ("train", "val"):
        assert torch.equal(a.split(split).images, b.split(split).images)
        assert torch.equal(a.split(split).targets["digit"], b.split(split).targets["digit"])
    assert not torch.equal(a.split("val").images, c.split("val").images)


def test_cache_round_trip(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = svhn(root=str(root), cache_dir=str(cache), n_val=N_VAL)
    assert len(list(cache.glob("svhn-*.pt"))) == 2  # train, test
    for path in (root / "svhn").iterdir():  # with the files gone, only the cache can answer
        path.unlink()
    again = svhn(root=str(root), cache_dir=str(cache), n_val=N_VAL)
    for name, split in first.splits.items():
        assert torch.equal(split.images, again.splits[name].images)
        assert all(torch.equal(t, again.splits[name].targets[k]) for k, t in split.targets.items())


def test_missing_files_say_what_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="train_32x32.mat") as err:
        svhn(root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    assert "ufldl.stanford.edu/housenumbers" in str(err.value)


def test_missing_extra_is_a_user_error(root: Path) -> None:
    with pytest.raises(UserError, match="extra_32x32.mat"):
        svhn(root=str(root), cache_dir=None, n_val=N_VAL, use_extra=True)


def test_missing_scipy_is_a_user_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy", None)  # find_spec reports a module set to None as absent
    with pytest.raises(UserError, match="pip install scipy"):
        svhn(root=str(root), cache_dir=None, n_val=N_VAL)


def test_config_instantiates(root: Path) -> None:
    conf = OmegaConf.load(config_dir() / "data" / "svhn.yaml")
    assert conf.channels == 3 and len(conf.mean) == len(conf.std) == 3 and conf.download is False
    # n_val overridden: the default (5000) is more than the fake files hold.
    data = instantiate(conf, root=str(root), cache_dir=None, n_val=N_VAL)
    assert isinstance(data, Dataset) and [t.name for t in data.tasks] == ["digit"]
    for split in ("train", "val", "test"):
        assert set(data.split(split).targets) == {"digit"}
