"""The csv manifest dataset: tiny real PNG/JPEG files and CSV manifests written in tmp_path, good and bad."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import mtlssl.data.imagefolder as files
from mtlssl.config import config_dir
from mtlssl.data.csv_manifest import csv
from mtlssl.errors import UserError
from mtlssl.tasks import build_tasks

SIZE = 8
HEADER = ["image", "split", "species", "tail", "x", "y", "tag_a", "tag_b"]
TASKS = {
    "species": {"kind": "multiclass", "column": "species", "num_outputs": 3},
    "tail": {"kind": "binary", "column": "tail"},
    "xy": {"kind": "regression", "column": ["x", "y"]},
    "tags": {"kind": "multilabel", "column": ["tag_a", "tag_b"], "num_outputs": 2},
}
# 6 train (row 2 has every label missing, row 3 only some), 2 val, 2 test, 2 unlabeled
ROWS = [
    ["train", "0", "1", "0.5", "-1.25", "1", "0"],
    ["train", "", "", "", "", "", ""],
    ["train", "2", "", "0.25", "3", "", ""],
    ["train", "1", "0", "", "", "0", "1"],
    ["train", "2.0", "1", "1e-3", "0", "1", "1"],
    ["train", "0", "0", "2", "2", "0", "0"],
    ["val", "1", "1", "0", "0", "1", "0"],
    ["val", "2", "0", "1", "1", "0", "1"],
    ["test", "0", "1", "0", "1", "1", "1"],
    ["test", "1", "0", "1", "0", "0", "0"],
    ["unlabeled", "", "", "", "", "", ""],
    ["unlabeled", "", "", "", "", "", ""],
]


def red(i: int) -> int:
    """Image i's red level: distinct per image so tests can tell which image went where."""
    return 10 + 20 * i


def write_image(path: Path, i: int, fmt: str = "PNG") -> None:
    """A solid 12x8 image (not square: the center crop runs) whose red channel identifies it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), (red(i), 100, 200)).save(path, fmt)


def write_manifest(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(r) for r in [header, *rows]) + "\n")
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """data/manifest.csv listing data/img/<i>.png (one JPEG) by relative path."""
    rows = []
    for i, cells in enumerate(ROWS):
        name = f"img/{i}.jpg" if i == 5 else f"img/{i}.png"
        write_image(tmp_path / "data" / name, i, "JPEG" if i == 5 else "PNG")
        rows.append([name, *cells])
    return write_manifest(tmp_path / "data" / "manifest.csv", HEADER, rows)


def build(manifest: Path, **kwargs: object):
    args = {"tasks": TASKS, "size": SIZE, "cache_dir": None, "num_workers": 0, **kwargs}
    return csv(str(manifest), **args)  # type: ignore[arg-type]


def rows_of(manifest: Path) -> list[list[str]]:
    """The data rows of a manifest written by ``write_manifest``."""
    return [line.split(",") for line in manifest.read_text().splitlines()[1:]]


def reds(images: torch.Tensor) -> list[int]:
    return images[:, 0].float().mean(dim=(1, 2)).round().long().tolist()


def test_builds_splits_tasks_and_targets(manifest: Path) -> None:
    data = build(manifest)
    assert [(t.name, t.kind, t.num_outputs) for t in data.tasks] == [
        ("species", "multiclass", 3), ("tail", "binary", 1), ("xy", "regression", 2), ("tags", "multilabel", 2)]
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6, "val": 2, "test": 2, "unlabeled": 8}
    train = data.splits["train"]
    assert train.images.shape == (6, 3, SIZE, SIZE) and train.images.dtype == torch.uint8
    assert reds(train.images)[:5] == [red(i) for i in range(5)]  # PNGs are exact; row 5 is a JPEG
    assert abs(reds(train.images)[5] - red(5)) <= 3
    assert train.targets["species"].tolist() == [0, -1, 2, 1, 2, 0]
    assert train.targets["species"].dtype == torch.long
    assert train.targets["tail"].shape == (6, 1) and train.targets["tail"].dtype == torch.float32
    assert torch.allclose(train.targets["xy"][4], torch.tensor([1e-3, 0.0]))
    assert data.splits["unlabeled"].targets == {}
    assert reds(data.splits["unlabeled"].images)[-2:] == [red(10), red(11)]
    assert reds(data.splits["test"].images) == [red(8), red(9)]
    assert data.mean == (0.485, 0.456, 0.406) and data.std == (0.229, 0.224, 0.225)


def test_empty_cells_are_missing_labels_that_the_loss_skips(manifest: Path) -> None:
    train = build(manifest).splits["train"]
    expected = {"species": [1, 0, 1, 1, 1, 1], "tail": [1, 0, 0, 1, 1, 1], "xy": [1, 0, 1, 0, 1, 1],
                "tags": [1, 0, 0, 1, 1, 1]}
    for task in build_tasks(build(manifest).tasks):
        target = train.targets[task.name]
        valid = task.valid(target)
        assert valid.tolist() == [bool(v) for v in expected[task.name]], task.name
        output = torch.randn(len(train), task.num_outputs)
        assert torch.isfinite(task.loss(output, target))
        assert torch.allclose(task.loss(output, target), task.loss(output[valid], target[valid]))
    assert torch.isnan(train.targets["xy"][1]).all() and torch.isnan(train.targets["tags"][2]).all()


def test_relative_paths_resolve_from_the_manifest_folder(manifest: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the manifest's folder: resolution must not depend on the cwd
    assert reds(build(manifest).splits["test"].images) == [red(8), red(9)]
    # root= overrides where relative paths start
    moved = write_manifest(tmp_path / "lists" / "m.csv", HEADER, rows_of(manifest))
    with pytest.raises(UserError, match="row 1 .*column 'image'"):
        build(moved)
    assert reds(build(moved, root=str(manifest.parent)).splits["test"].images) == [red(8), red(9)]


def test_absolute_paths_and_center_crop(tmp_path: Path) -> None:
    stripes = Image.new("RGB", (30, 10), (255, 0, 0))
    stripes.paste((0, 255, 0), (10, 0, 20, 10))  # the middle third, which the center crop keeps
    rows = []
    for i, split in enumerate(("train", "train", "val", "test")):  # one file per row: a file listed twice is refused
        stripes.save(tmp_path / f"stripes{i}.png")
        rows.append([str(tmp_path / f"stripes{i}.png"), split, "1"])
    m = write_manifest(tmp_path / "m.csv", ["image", "split", "t"], rows)
    data = csv(str(m), tasks={"t": {"kind": "binary", "column": "t"}}, size=4, cache_dir=None, num_workers=0)
    assert (data.splits["train"].images[0] == torch.tensor([0, 255, 0]).view(3, 1, 1)).all()
    squashed = csv(str(m), tasks={}, size=4, cache_dir=None, num_workers=0, center_crop=False)
    assert squashed.splits["train"].images[0, 0, 0, 0] > 200  # the red left edge survives a squash


def test_deterministic_split_without_a_split_column(manifest: Path) -> None:
    a = build(manifest, split_column=None, n_val=2, n_test=3)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 7, "val": 2, "test": 3, "unlabeled": 7}
    b = build(manifest, split_column=None, n_val=2, n_test=3)
    c = build(manifest, split_column=None, n_val=2, n_test=3, seed=1)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split].images, b.splits[split].images)
        assert all(torch.equal(a.splits[split].targets[k].nan_to_num(-7), b.splits[split].targets[k].nan_to_num(-7))
                   for k in a.splits[split].targets)
    assert any(not torch.equal(a.splits[s].images, c.splits[s].images) for s in ("train", "val", "test"))
    default = build(manifest, split_column=None)  # 10% each, at least one
    assert (len(default.splits["val"]), len(default.splits["test"])) == (1, 1)


def test_n_train_and_n_val_hold_out(manifest: Path, tmp_path: Path) -> None:
    data = build(manifest, n_train=3)
    assert len(data.splits["train"]) == 3 and len(data.splits["unlabeled"]) == 8
    no_val = [r for r in rows_of(manifest) if r[1] != "val"]
    m = write_manifest(manifest.parent / "no_val.csv", HEADER, no_val)
    with pytest.raises(UserError, match="split 'val' is empty.*data.n_val"):
        build(m)
    held = build(m, n_val=2)
    assert (len(held.splits["train"]), len(held.splits["val"])) == (4, 2)


def test_cache_round_trip(manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = build(manifest, cache_dir=str(cache))
    assert len(list(cache.glob("csv-*.pt"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(files, "decode_files", no_decoding)
    second = build(manifest, cache_dir=str(cache))
    for split in first.splits:
        assert torch.equal(first.splits[split].images, second.splits[split].images)
    monkeypatch.undo()
    write_image(manifest.parent / "img" / "0.png", 11)  # a changed image file is decoded afresh
    (manifest.parent / "img" / "0.png").touch()
    third = build(manifest, cache_dir=str(cache))
    assert reds(third.splits["train"].images)[0] == red(11)


def test_workers_decode_the_same(manifest: Path) -> None:
    assert torch.equal(build(manifest, num_workers=2).splits["train"].images,
                       build(manifest, num_workers=0).splits["train"].images)


def _bad(tmp_path: Path, manifest: Path, row: int, column: str, value: str) -> Path:
    """The good manifest with one cell (data row ``row``, 1-based) replaced."""
    rows = rows_of(manifest)
    rows[row - 1][HEADER.index(column)] = value
    return write_manifest(manifest.parent / "bad.csv", HEADER, rows)


@pytest.mark.parametrize(("row", "column", "value", "message"), [
    (3, "species", "3", "class id 3 is out of range 0..2"),
    (3, "species", "-1", "out of range"),
    (4, "species", "1.5", "'1.5' is not an integer"),
    (4, "species", "cat", "'cat' is not an integer"),
    (1, "x", "nan", "'nan' is not a finite number"),
    (3, "species", "nan", "'nan' is not an integer class id"),
    (5, "tail", "nan", "'nan' is not 0 or 1"),
    (1, "x", "1e308", "'1e308' is too large for a float32 target"),  # finite, but inf once stored as float32
    (3, "species", "1e400", "'1e400' is not an integer class id"),
    (1, "y", "abc", "'abc' is not a finite number"),
    (5, "tail", "2", "'2' is not 0 or 1"),
    (6, "tag_b", "yes", "'yes' is not 0 or 1"),
    (6, "tag_b", "", "empty and filled cells"),
    (7, "image", "img/nope.png", "cannot be read"),
    (7, "image", "", "image path is empty"),
    (7, "image", "img/a\x00.png", "contains a NUL character"),
    (7, "image", "~no_such_user_xyz/0.png", "cannot be read"),  # pathlib's expanduser raised RuntimeError
    (8, "split", "training", "split 'training' is not one of"),
])
def test_bad_cells_name_the_row_and_column(tmp_path: Path, manifest: Path, row: int, column: str, value: str,
                                           message: str) -> None:
    bad = _bad(tmp_path, manifest, row, column, value)
    with pytest.raises(UserError) as err:
        build(bad)
    text = str(err.value)
    assert str(bad) in text and f"row {row} (line {row + 1}), column '{column}'" in text and message in text


def test_unreadable_image_names_the_row(manifest: Path) -> None:
    (manifest.parent / "img" / "3.png").write_text("not a png")
    for workers in (0, 2):
        with pytest.raises(UserError, match=r"row 4 \(line 5\), column 'image'.*cannot be decoded"):
            build(manifest, num_workers=workers)


def test_missing_column(manifest: Path) -> None:
    tasks = {**TASKS, "age": {"kind": "regression", "column": "age"}}
    with pytest.raises(UserError, match="column 'age' \\(task 'age'\\) is not in the header.*columns are: image"):
        build(manifest, tasks=tasks)
    with pytest.raises(UserError, match="column 'path' .*not in the header"):
        build(manifest, image_column="path")
    with pytest.raises(UserError, match="column 'fold' .*set it to null"):
        build(manifest, split_column="fold")


@pytest.mark.parametrize(("task", "message"), [
    ({"kind": "ordinal", "column": "species"}, "kind='ordinal' is not a task kind"),
    ({"kind": "multiclass", "column": "species"}, "num_outputs is missing"),
    ({"kind": "binary", "column": ["tag_a", "tag_b"]}, "reads one column"),
    ({"kind": "multilabel", "column": ["tag_a", "tag_b"], "num_outputs": 3}, "does not match"),
    ({"kind": "binary", "colum": "tail"}, "unknown key"),
    ({"kind": "binary", "column": None}, "column=None is not a column name"),
    ({"kind": "regression", "column": {"x": 1}}, "is not a column name or a list of names"),
    ({"kind": "multiclass", "column": "species", "num_outputs": "abc"}, "num_outputs='abc' is not a whole number"),
    ({"kind": "multiclass", "column": "species", "num_outputs": 2.5}, "num_outputs=2.5 is not a whole number"),
    ({"kind": "multiclass", "column": "species", "num_outputs": float("inf")}, "is not a whole number"),
    ({"kind": "multiclass", "column": "species", "num_outputs": 1}, "num_outputs=1 is too small"),
    ({"kind": "binary", "column": "tail", "num_outputs": 2}, "a binary task has num_outputs=1"),
])
def test_bad_task_declarations(manifest: Path, task: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        build(manifest, tasks={"t": task})
    assert "data.tasks.t" in str(err.value)


def test_tasks_must_be_a_mapping(manifest: Path) -> None:
    with pytest.raises(UserError, match="data.tasks must be a mapping .* got list"):
        build(manifest, tasks=["species"])


def test_repeated_column_names_and_leading_blank_lines(manifest: Path, tmp_path: Path) -> None:
    rows = rows_of(manifest)
    with pytest.raises(UserError, match="column\\(s\\) 'x' appear more than once in the header"):
        build(write_manifest(tmp_path / "data" / "dup.csv", [*HEADER[:-1], "x"], rows))  # tag_b -> x: one hides
    blank_first = tmp_path / "data" / "blank.csv"
    blank_first.write_text("\n \n" + manifest.read_text())  # blank lines before the header are skipped
    assert build(blank_first).splits["train"].targets["species"].tolist() == [0, -1, 2, 1, 2, 0]


def test_empty_split_and_bad_shapes(manifest: Path, tmp_path: Path) -> None:
    rows = [r for r in rows_of(manifest) if r[1] != "test"]
    with pytest.raises(UserError, match="split 'test' is empty"):
        build(write_manifest(tmp_path / "data" / "no_test.csv", HEADER, rows))
    short = [*rows[:3], rows[3][:-1]]
    with pytest.raises(UserError, match=r"row 4 \(line 5\) has 7 cells for the 8 columns"):
        build(write_manifest(tmp_path / "data" / "short.csv", HEADER, short))
    with pytest.raises(UserError, match="has no rows"):
        build(write_manifest(tmp_path / "data" / "empty.csv", HEADER, []))
    with pytest.raises(UserError, match="cannot be read"):
        build(tmp_path / "missing.csv")


def _same_path(manifest: Path, source: str) -> str:
    return source


def _other_spelling(manifest: Path, source: str) -> str:
    return f"./img/../{source}"


def _absolute(manifest: Path, source: str) -> str:
    return str(manifest.parent / source)


def _symlink(manifest: Path, source: str) -> str:
    (manifest.parent / "img" / "link.png").symlink_to(manifest.parent / source)
    return "img/link.png"


def _hard_link(manifest: Path, source: str) -> str:
    os.link(manifest.parent / source, manifest.parent / "img" / "hard.png")
    return "img/hard.png"


@pytest.mark.parametrize("second_name", [_same_path, _other_spelling, _absolute, _symlink, _hard_link])
@pytest.mark.parametrize(("first", "second"), [(0, 8), (0, 3), (6, 10)], ids=["train-test", "train-train",
                                                                           "val-unlabeled"])
def test_the_same_image_file_in_two_rows_is_refused_naming_both(manifest: Path, second_name: Callable[[Path, str], str],
                                                                first: int, second: int) -> None:
    rows = rows_of(manifest)
    rows[second][0] = second_name(manifest, rows[first][0])
    with pytest.raises(UserError, match="is the same file as") as err:
        build(write_manifest(manifest, HEADER, rows))
    message = str(err.value)
    assert f"row {second + 1} (line {second + 2})" in message and f"row {first + 1} (line {first + 2})" in message
    assert "list each image once" in message


def test_conf_instantiates(manifest: Path) -> None:
    cfg = OmegaConf.load(config_dir() / "data" / "csv.yaml")
    data = hydra.utils.instantiate(cfg, manifest=str(manifest), tasks=TASKS, size=SIZE, cache_dir=None)
    assert [t.name for t in data.tasks] == list(TASKS) and len(data.splits["train"]) == 6
    assert not math.isnan(data.splits["val"].targets["xy"].sum().item())
