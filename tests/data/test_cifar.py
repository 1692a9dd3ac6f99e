"""CIFAR-10 / CIFAR-100 builders on tiny fake archives written in the real on-disk format (never downloaded).

Checksums: torchvision's ``_check_integrity`` compares each file's md5 with the real archive's, which tiny fake
files cannot match. The ``no_md5`` fixture replaces ``torchvision.datasets.utils.check_md5`` (which
``check_integrity`` calls) with one that accepts any file. Only the md5 comparison is skipped: the file-exists
check stays, so a missing file is still refused exactly as it is on a real machine.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import Tensor

from mtlssl.config import config_dir
from mtlssl.data import cifar
from mtlssl.data.image_set import Dataset
from mtlssl.errors import UserError

PER_BATCH, N_TEST, N_VAL = 8, 12, 6  # 5 train batches: 40 train images
N_TRAIN = 5 * PER_BATCH


@pytest.fixture(autouse=True)
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept the fake files' md5 (see the module docstring); files must still exist."""
    monkeypatch.setattr("torchvision.datasets.utils.check_md5", lambda *args, **kwargs: True)


def coarse_of(fine: np.ndarray) -> np.ndarray:
    """The fake archives' fine -> coarse mapping: any fixed map the builder cannot guess from fine labels."""
    return (fine * 7 + 3) % 20


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _dump(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry))


def write_cifar10(root: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cifar-10-batches-py/: data_batch_1..5, test_batch ({"data": [n, 3072], "labels"}) and batches.meta.
    Returns the train images [N, 3, 32, 32] and labels in file order."""
    rng, folder = np.random.default_rng(seed), root / "cifar-10-batches-py"
    images, labels = _images(rng, N_TRAIN + N_TEST), rng.integers(0, 10, N_TRAIN + N_TEST)
    for i in range(5):
        part = slice(i * PER_BATCH, (i + 1) * PER_BATCH)
        _dump(folder / f"data_batch_{i + 1}", {"data": images[part].reshape(PER_BATCH, -1),
                                               "labels": labels[part].tolist()})
    _dump(folder / "test_batch", {"data": images[N_TRAIN:].reshape(N_TEST, -1), "labels": labels[N_TRAIN:].tolist()})
    _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return images[:N_TRAIN], labels[:N_TRAIN]


def write_cifar100(root: Path, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """cifar-100-python/: train and test ({"data", "fine_labels", "coarse_labels"}) and meta."""
    rng, folder = np.random.default_rng(seed), root / "cifar-100-python"
    images, fine = _images(rng, N_TRAIN + N_TEST), rng.integers(0, 100, N_TRAIN + N_TEST)
    for name, part in (("train", slice(0, N_TRAIN)), ("test", slice(N_TRAIN, None))):
        _dump(folder / name, {"data": images[part].reshape(-1, 3072), "fine_labels": fine[part].tolist(),
                              "coarse_labels": coarse_of(fine[part]).tolist()})
    _dump(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                            "coarse_label_names": [f"c{i}" for i in range(20)]})
    return images[:N_TRAIN], fine[:N_TRAIN]


@pytest.fixture
def root10(tmp_path: Path) -> Path:
    write_cifar10(tmp_path)
    return tmp_path


@pytest.fixture
def root100(tmp_path: Path) -> Path:
    write_cifar100(tmp_path)
    return tmp_path


def rows(images: Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


def test_cifar10_splits_sizes_labels_and_pixels(tmp_path: Path) -> None:
    images, labels = write_cifar10(tmp_path)
    data = cifar.cifar10(root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": N_TRAIN - N_VAL, "val": N_VAL, "test": N_TEST, "unlabeled": N_TRAIN}
    assert [t.name for t in data.tasks] == ["label"] and data.mean == (0.4914, 0.4822, 0.4465)
    train, val = data.split("train"), data.split("val")
    assert not rows(train.images) & rows(val.images)
    assert rows(train.images) | rows(val.images) == rows(torch.from_numpy(images))
    # The pool is every train image in file order, pixels untouched at the native size, and carries no labels.
    assert torch.equal(data.split("unlabeled").images, torch.from_numpy(images))
    assert data.split("unlabeled").targets == {}
    for split in ("train", "val", "test"):
        target = data.split(split).targets["label"]
        assert target.dtype == torch.int64 and 0 <= int(target.min()) and int(target.max()) < 10
    by_image = {image.tobytes(): int(y) for image, y in zip(images, labels, strict=True)}
    assert [by_image[image.numpy().tobytes()] for image in val.images] == val.targets["label"].tolist()


@pytest.mark.parametrize("size", [16, 48])
def test_images_are_uint8_at_the_working_size(root10: Path, size: int) -> None:
    data = cifar.cifar10(root=str(root10), cache_dir=None, n_val=N_VAL, size=size)
    for split in data.splits.values():
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape[1:]) == (3, size, size)


def test_cifar100_has_fine_and_coarse_labels_from_the_archive(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    data = cifar.cifar100(root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    assert [(t.name, t.num_outputs) for t in data.tasks] == [("fine", 100), ("coarse", 20)]
    for split in ("train", "val", "test"):
        targets = data.split(split).targets
        assert 0 <= int(targets["fine"].min()) and int(targets["fine"].max()) < 100
        assert 0 <= int(targets["coarse"].min()) and int(targets["coarse"].max()) < 20
        assert torch.equal(targets["coarse"], torch.from_numpy(coarse_of(targets["fine"].numpy())))


def test_cifar100_archive_without_coarse_labels_is_refused(root100: Path) -> None:
    path = root100 / "cifar-100-python" / "train"
    entry = pickle.loads(path.read_bytes())
    del entry["coarse_labels"]
    path.write_bytes(pickle.dumps(entry))
    with pytest.raises(UserError, match="coarse_labels"):
        cifar.cifar100(root=str(root100), cache_dir=None, n_val=N_VAL)


def test_n_train_subsamples_labels_but_keeps_the_whole_pool(root10: Path) -> None:
    full = cifar.cifar10(root=str(root10), cache_dir=None, n_val=N_VAL)
    few = cifar.cifar10(root=str(root10), cache_dir=None, n_val=N_VAL, n_train=10)
    assert len(few.split("train")) == 10 and rows(few.split("train").images) <= rows(full.split("train").images)
    assert torch.equal(few.split("val").images, full.split("val").images)
    assert torch.equal(few.split("unlabeled").images, full.split("unlabeled").images)


def test_splits_are_deterministic_per_seed(root10: Path) -> None:
    def build(seed: int) -> Dataset:
        return cifar.cifar10(root=str(root10), cache_dir=None, n_val=N_VAL, n_train=12, seed=seed)

    a, b, c = build(1), build(1), build(2)
    for split in ("train", "val"):
        assert torch.equal(a.split(split).images, b.split(split).images)
        assert torch.equal(a.split(split).targets["label"], b.split(split).targets["label"])
    assert not torch.equal(a.split("val").images, c.split("val").images)


def test_cache_round_trip(root10: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = cifar.cifar10(root=str(root10), cache_dir=str(cache), n_val=N_VAL, size=16)
    assert sorted(p.name.split("-")[0] for p in cache.glob("*.pt")) == ["cifar10", "cifar10"]  # train, test
    # With the archive gone, only the cache can answer: the same tensors come back.
    for path in (root10 / "cifar-10-batches-py").iterdir():
        path.unlink()
    again = cifar.cifar10(root=str(root10), cache_dir=str(cache), n_val=N_VAL, size=16)
    for name, split in first.splits.items():
        assert torch.equal(split.images, again.splits[name].images)
        assert all(torch.equal(t, again.splits[name].targets[k]) for k, t in split.targets.items())
    with pytest.raises(UserError):  # another working size is another key: it needs the files
        cifar.cifar10(root=str(root10), cache_dir=str(cache), n_val=N_VAL, size=8)


@pytest.mark.parametrize(("builder", "fetch"), [(cifar.cifar10, "cifar-10-python.tar.gz"),
                                                 (cifar.cifar100, "cifar-100-python.tar.gz")])
def test_missing_files_say_what_to_fetch(tmp_path: Path, builder, fetch: str) -> None:
    with pytest.raises(UserError, match=fetch) as err:
        builder(root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    assert "cs.toronto.edu" in str(err.value) and "download is off" in str(err.value)


def test_wrong_channels_or_split_sizes_are_user_errors(root10: Path) -> None:
    with pytest.raises(UserError, match="channels"):
        cifar.cifar10(root=str(root10), cache_dir=None, n_val=N_VAL, channels=1)
    with pytest.raises(UserError, match="n_train"):
        cifar.cifar10(root=str(root10), cache_dir=None, n_val=N_VAL, n_train=-1)
    with pytest.raises(UserError, match="n_val"):
        cifar.cifar10(root=str(root10), cache_dir=None, n_val=N_TRAIN)


@pytest.mark.parametrize(("name", "write", "tasks"), [("cifar10", write_cifar10, ["label"]),
                                                      ("cifar100", write_cifar100, ["fine", "coarse"])])
def test_config_instantiates(tmp_path: Path, name: str, write, tasks: list[str]) -> None:
    write(tmp_path)
    conf = OmegaConf.load(config_dir() / "data" / f"{name}.yaml")
    assert conf.channels == 3 and len(conf.mean) == len(conf.std) == 3 and conf.download is False
    # n_val overridden: the default (5000) is more than the fake archive holds.
    data = instantiate(conf, root=str(tmp_path), cache_dir=None, n_val=N_VAL)
    assert isinstance(data, Dataset) and [t.name for t in data.tasks] == tasks
    for split in ("train", "val", "test"):
        assert set(data.split(split).targets) == set(tasks)
