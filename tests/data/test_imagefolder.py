"""The imagefolder dataset: both layouts, with tiny real PNG/JPEG files in tmp_path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import mtlssl.data.imagefolder as files
from mtlssl.config import config_dir
from mtlssl.data.imagefolder import imagefolder
from mtlssl.errors import UserError

SIZE = 8
CLASSES = ["cat", "ant", "bee"]  # sorted: ant=0, bee=1, cat=2


def write_image(path: Path, level: int, fmt: str = "PNG") -> None:
    """A solid 10x14 image whose red channel is ``level``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 14), (level, 50, 150)).save(path, fmt)


def reds(images: torch.Tensor) -> list[int]:
    return images[:, 0].float().mean(dim=(1, 2)).round().long().tolist()


def class_level(name: str, i: int) -> int:
    """Red level of image i of class ``name``: the class shows in the tens, the image in the units."""
    return 40 * sorted(CLASSES).index(name) + 40 + i


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    """root/<class>/*: 5 images per class, one of them a JPEG, plus a non-image file that is ignored."""
    root = tmp_path / "flat"
    for name in CLASSES:
        for i in range(5):
            fmt = "JPEG" if i == 4 else "PNG"
            write_image(root / name / f"{i}.{fmt.lower().replace('jpeg', 'jpg')}", class_level(name, i), fmt)
    (root / "ant" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def split_tree(tmp_path: Path) -> Path:
    """root/train|val|test/<class>/*.png; test lacks the class 'bee'."""
    root = tmp_path / "tree"
    for split, n in (("train", 4), ("val", 2), ("test", 1)):
        for name in CLASSES:
            if split == "test" and name == "bee":
                continue
            for i in range(n):
                write_image(root / split / name / f"{i}.png", class_level(name, i))
    return root


def build(root: Path, **kwargs: object):
    return imagefolder(str(root), **{"size": SIZE, "cache_dir": None, "num_workers": 0, **kwargs})  # type: ignore[arg-type]


def test_split_folders_are_the_splits(split_tree: Path) -> None:
    data = build(split_tree)
    assert [(t.name, t.kind, t.num_outputs) for t in data.tasks] == [("label", "multiclass", 3)]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 12, "val": 6, "test": 2, "unlabeled": 12}
    train = data.splits["train"]
    assert train.images.shape == (12, 3, SIZE, SIZE) and train.images.dtype == torch.uint8
    assert train.targets["label"].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # classes sorted by name
    assert reds(train.images) == [class_level(c, i) for c in sorted(CLASSES) for i in range(4)]
    assert data.splits["test"].targets["label"].tolist() == [0, 2]  # a class absent from test keeps its id
    assert data.splits["unlabeled"].targets == {}


def test_missing_val_and_test_folders_are_held_out_of_train(split_tree: Path) -> None:
    for split in ("val", "test"):
        for path in sorted((split_tree / split).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (split_tree / split).rmdir()
    data = build(split_tree, n_val=2, n_test=3)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 7, "val": 2, "test": 3, "unlabeled": 7}
    all_levels = sorted(sum((reds(data.splits[s].images) for s in ("train", "val", "test")), []))
    assert all_levels == sorted(class_level(c, i) for c in CLASSES for i in range(4))


def test_flat_layout_is_split_deterministically(flat: Path) -> None:
    a, b, c = build(flat, n_val=3, n_test=2), build(flat, n_val=3, n_test=2), build(flat, n_val=3, n_test=2, seed=4)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 10, "val": 3, "test": 2, "unlabeled": 10}
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].images, b.splits[split].images)
        assert torch.equal(a.splits[split].targets["label"], b.splits[split].targets["label"])
    assert any(not torch.equal(a.splits[s].targets["label"], c.splits[s].targets["label"]) for s in ("val", "test"))
    # labels follow the pixels: the red level's tens give the class
    for split in a.splits.values():
        if split.targets:
            assert [(r - 40) // 40 for r in reds(split.images)] == split.targets["label"].tolist()
    default = build(flat)  # 10% of 15 each
    assert (len(default.splits["val"]), len(default.splits["test"])) == (2, 2)


def test_n_train_keeps_the_unlabeled_pool(split_tree: Path) -> None:
    data = build(split_tree, n_train=5)
    assert len(data.splits["train"]) == 5 and len(data.splits["unlabeled"]) == 12


def test_cache_round_trip_and_workers(flat: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = build(flat, cache_dir=str(cache), num_workers=2)
    assert len(list(cache.glob("imagefolder-*.pt"))) == 1
    monkeypatch.setattr(files, "decode_files", lambda *a, **k: pytest.fail("decoded instead of using the cache"))
    second = build(flat, cache_dir=str(cache))
    assert all(torch.equal(first.splits[s].images, second.splits[s].images) for s in first.splits)


def test_bad_folders(tmp_path: Path, flat: Path, split_tree: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        build(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="one sub-folder per class"):
        build(tmp_path / "empty")
    write_image(split_tree / "val" / "dog" / "0.png", 1)
    with pytest.raises(UserError, match=r"class folder\(s\) \['dog'\].*not among the training classes"):
        build(split_tree)
    (flat / "bee" / "1.png").write_bytes(b"broken")
    with pytest.raises(UserError, match="1.png' cannot be decoded"):
        build(flat)
    with pytest.raises(UserError, match="data.channels=2"):
        build(flat, channels=2)


def test_greyscale(flat: Path) -> None:
    data = build(flat, channels=1, mean=[0.5], std=[0.25])
    assert data.splits["train"].images.shape[1] == 1 and data.mean == (0.5,)


def test_conf_instantiates(flat: Path) -> None:
    cfg = OmegaConf.load(config_dir() / "data" / "imagefolder.yaml")
    data = hydra.utils.instantiate(cfg, root=str(flat), size=SIZE, cache_dir=None)
    assert data.name == "imagefolder" and [t.name for t in data.tasks] == ["label"]
    assert data.mean == (0.485, 0.456, 0.406) and len(data.splits["test"]) == 2


# --- folders and files reached twice (symlinks, hard links) -----------------------------------------------


def link(path: Path, target: Path | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


FOLDER_TWICE = {
    "a loop back to the split folder": lambda root: link(root / "train" / "cat" / "loop", ".."),
    "a loop back to the class folder": lambda root: link(root / "train" / "cat" / "deeper" / "loop", "../.."),
    "a loop back to the dataset root": lambda root: link(root / "train" / "ant" / "up", root),
    "a link to a sibling class folder": lambda root: link(root / "train" / "cat" / "more", "../bee"),
    "a class folder that is a link to another": lambda root: link(root / "train" / "dog", "bee"),
    "a link from train into test": lambda root: link(root / "train" / "ant" / "extra", root / "test" / "ant"),
    "a split folder that is a link to another": lambda root: (shutil.rmtree(root / "val"), link(root / "val", "train")),
}


@pytest.mark.parametrize("make", FOLDER_TWICE.values(), ids=FOLDER_TWICE.keys())
def test_a_folder_reached_twice_is_refused_before_anything_is_decoded(
        make: Callable[[Path], object], split_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make(split_tree)
    monkeypatch.setattr(files, "decode_files", lambda *a, **k: pytest.fail("decoded a walk that reads a folder twice"))
    with pytest.raises(UserError, match="are one folder, reached twice") as err:
        build(split_tree, cache_dir=str(tmp_path / "cache"))
    assert "Remove the link" in str(err.value) and str(split_tree) in str(err.value)
    assert not (tmp_path / "cache").exists(), "nothing written"


def test_a_loop_in_the_flat_layout_is_refused(flat: Path) -> None:
    link(flat / "ant" / "sub" / "loop", "../..")
    with pytest.raises(UserError, match=rf"'{flat / 'ant' / 'sub' / 'loop'}' and '{flat}' are one folder"):
        build(flat)


def _symlinked(source: Path, target: Path) -> None:
    link(target, source)


def _hard_linked(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, target)


FILE_TWICE = {  # (source, the second place the same file appears), relative to the split tree
    "train and test": ("train/cat/0.png", "test/cat/9.png"),
    "train and val, another class": ("train/cat/0.png", "val/ant/9.png"),
    "one class twice": ("train/cat/0.png", "train/cat/9.png"),
    "two classes of one split": ("train/cat/0.png", "train/bee/9.png"),
}


@pytest.mark.parametrize("place", [_symlinked, _hard_linked])
@pytest.mark.parametrize("where", FILE_TWICE.values(), ids=FILE_TWICE.keys())
def test_the_same_file_twice_is_refused_naming_both_paths(place: Callable[[Path, Path], None],
                                                          where: tuple[str, str], split_tree: Path) -> None:
    source, second = split_tree / where[0], split_tree / where[1]
    place(source, second)
    with pytest.raises(UserError, match="is the same file as") as err:
        build(split_tree)
    message = str(err.value)
    assert str(source) in message and str(second) in message
    for split in {where[0].split("/")[0], where[1].split("/")[0]}:
        assert f"split '{split}'" in message


def test_links_to_folders_and_files_elsewhere_are_followed(split_tree: Path, tmp_path: Path) -> None:
    """A dataset assembled from links (each folder and file once) reads as the same files copied."""
    copied = build(split_tree)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(split_tree / "train" / "cat", elsewhere / "cats")
    link(split_tree / "train" / "cat", elsewhere / "cats")
    shutil.move(split_tree / "val" / "ant" / "1.png", elsewhere / "one.png")
    link(split_tree / "val" / "ant" / "1.png", elsewhere / "one.png")
    linked = build(split_tree)
    for split in copied.splits:
        assert torch.equal(copied.splits[split].images, linked.splits[split].images)
        assert copied.splits[split].targets.keys() == linked.splits[split].targets.keys()


def test_a_folder_loop_exits_2_from_the_command_line(split_tree: Path, tmp_path: Path) -> None:
    """The probe's case end to end: before, 24 images became 984 and the run ended with exit status 0."""
    link(split_tree / "train" / "cat" / "loop", "..")
    run = subprocess.run([sys.executable, "-m", "mtlssl", "train-mtl", "device=cpu", "data=imagefolder",
                          f"data.root={split_tree}", "data.size=8", "data.num_workers=0", "data.cache_dir=null",
                          "trainer.epochs=1", "trainer.batch_size=4", "encoder.arch.width=4", "encoder.arch.depth=3",
                          f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    said = " ".join((run.stderr + run.stdout).split())  # the console wraps long messages
    assert "are one folder, reached twice" in said and "Traceback" not in said
    assert not (tmp_path / "run" / "checkpoints").exists()
