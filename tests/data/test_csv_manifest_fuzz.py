"""Fuzzing the csv manifest reader: any manifest text and any task declaration gives a valid dataset (labels
in range, finite or the missing marker, shapes consistent) or a ``UserError``; never another exception.

The parsing layers (``_read``, ``_parse_tasks``, ``_targets``, ``_split_names``, ``_image_paths``) get most
examples; ``csv(...)`` end to end gets fewer, with image cells pointing at a few tiny PNGs written once.
"""

from __future__ import annotations

import csv as csvlib
import io
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from mtlssl.data import csv_manifest as cm
from mtlssl.data.image_set import Dataset
from mtlssl.errors import UserError
from mtlssl.tasks import KINDS, TaskSpec

# Reproducible in CI (no example database, derandomized) and quick: a few seconds per test on 2 cores.
FUZZ = settings(max_examples=400, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MANIFEST = Path("fuzz.csv")  # only named in messages by the layers that do not open it
COLUMNS = ("a", "b", "c")

# ---- strategies --------------------------------------------------------------------------------------------

# The characters that matter to a CSV reader and to number parsing, plus any text.
csv_chars = st.sampled_from([",", '"', "\n", "\r", "\r\n", "\x00", "\ufeff", " ", "\t", "0", "1", "2", "-", ".",
                             "e", "a", "b", "c", "image", "split", "train", "nan", "inf", "é"])
csv_text = st.lists(csv_chars | st.text(max_size=3), max_size=40).map("".join)
# Lines of a few names and cells, so headers repeat names and rows are ragged or blank more often than by chance.
csv_lines = st.lists(st.lists(st.sampled_from(["a", "b", "a ", "", " ", '"a"', '"x,y"', '"', "1", "\x00"]),
                              max_size=4).map(",".join), max_size=5).map("\n".join)
good_cell = st.sampled_from(["0", "1", "", "0", "1"])  # valid for every kind (with 2+ classes)
fair_cell = st.sampled_from(["2", "2.0", "-0", "true", "0.5", "1e-3"])  # valid for some kinds
weird_cell = st.one_of(
    st.sampled_from(["", "0", "1", "2", "-1", "-0", "0.0", "2.0", "1.5", "nan", "NaN", "-nan", "inf", "-inf",
                     "Infinity", "1e309", "-1e309", "1e308", "3.5e38", "-3.4e38", "1e-320", "1e19", " 1 ", "true",
                     "False", "1_0", "0x1", "\u0661", "\x00", "1\x00", "½", "--1", "+1", "  "]),
    st.integers(-(10**30), 10**30).map(str),
    st.floats().map(repr),
    st.text(max_size=6),
)
# Mostly valid, so that many examples get past the first cell and their labels are checked.
label_cell = st.one_of(good_cell, good_cell, good_cell, fair_cell, weird_cell)
kind = (st.sampled_from(tuple(KINDS)) | st.sampled_from(["", "Multiclass", "ordinal", None, 3])
        | st.lists(st.text(max_size=3)))
column = st.one_of(st.sampled_from(COLUMNS), st.lists(st.sampled_from(COLUMNS), max_size=3),
                   st.sampled_from([None, 3, True, 2.5, "", "zz", [], [None], [["a"]], {"a": 1}, ("a", "b")]))
num_outputs = st.none() | st.integers(-3, 6) | st.sampled_from(
    [0, -1, "3", "abc", 2.5, 2.0, True, False, math.inf, math.nan, [3], {"n": 3}, 10**30, 2**24, 2**24 + 1])
declaration = st.one_of(
    st.fixed_dictionaries({"kind": kind}, optional={"column": column, "num_outputs": num_outputs}),
    st.fixed_dictionaries({"kind": kind, "colum": column}),  # an unknown key
    st.sampled_from([None, 3, "multiclass", ["kind"]]),
)


@st.composite
def good_declaration(draw: st.DrawFn) -> dict[str, Any]:
    """A declaration that fits the columns: one column for multiclass/binary, several for the others."""
    task_kind = draw(st.sampled_from(tuple(KINDS)))
    if task_kind in ("multiclass", "binary"):
        declared: dict[str, Any] = {"kind": task_kind, "column": draw(st.sampled_from(COLUMNS))}
        if task_kind == "multiclass":
            declared["num_outputs"] = draw(st.integers(2, 4))
        return declared
    columns = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3))
    return {"kind": task_kind, "column": columns, **draw(st.sampled_from([{}, {"num_outputs": len(columns)}]))}


task_name = st.sampled_from([*COLUMNS, "t"]) | st.integers(0, 2)
good_tasks = st.dictionaries(task_name, good_declaration(), min_size=1, max_size=3)
tasks = st.one_of(good_tasks, good_tasks, good_tasks, st.dictionaries(task_name, declaration, max_size=3),
                  st.sampled_from([None, [1], "abc", 3, {}]))
split_cell = st.one_of(st.sampled_from(["train", "train", "val", "test", "unlabeled"]),
                       st.sampled_from(["valid", "Validation", "TEST", "unlabelled", "", "training", "\x00"])
                       | st.text(max_size=4))


# ---- checks ------------------------------------------------------------------------------------------------


def check_target(spec: TaskSpec, target: torch.Tensor, n: int) -> None:
    """A target tensor as the losses expect it: ids -1..K-1 (long, [N]); else float32 [N, K], each row all
    NaN (missing) or all finite, 0/1 for binary and multilabel."""
    if spec.kind == "multiclass":
        assert target.dtype == torch.long and target.shape == (n,)
        assert bool(((target >= -1) & (target < spec.num_outputs)).all())
        return
    assert target.dtype == torch.float32 and target.shape == (n, spec.num_outputs)
    missing, finite = torch.isnan(target), torch.isfinite(target)
    assert bool((missing.all(dim=1) | finite.all(dim=1)).all()), "a label is present or missing as a whole"
    if spec.kind in ("binary", "multilabel"):
        assert bool(((target == 0) | (target == 1) | missing).all())


def check_dataset(data: Dataset, size: int) -> None:
    assert set(data.splits) == {"train", "val", "test", "unlabeled"}
    for name, part in data.splits.items():
        n = len(part)
        assert part.images.shape == (n, 3, size, size) and part.images.dtype == torch.uint8
        if name == "unlabeled":
            assert part.targets == {}
            continue
        assert set(part.targets) == {t.name for t in data.tasks}
        for spec in data.tasks:
            check_target(spec, part.targets[spec.name], n)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny valid PNGs (one non-square: the center crop runs), a corrupt one, and a folder."""
    root = tmp_path_factory.mktemp("csv_fuzz")
    Image.new("RGB", (3, 3), (10, 20, 30)).save(root / "p0.png")
    Image.new("RGB", (5, 2), (200, 20, 30)).save(root / "p1.png")
    Image.new("L", (2, 2), 7).save(root / "p2.png")
    for i in range(3, len(VALID_IMAGES)):  # enough distinct files for a manifest that lists each image once
        Image.new("RGB", (i, 3), (i, 2 * i, 3 * i)).save(root / f"p{i}.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    (root / "folder").mkdir()
    return root


# ---- the parsing layers ------------------------------------------------------------------------------------


@FUZZ
@given(content=csv_text.map(str.encode) | csv_lines.map(str.encode) | st.binary(max_size=80)
       | st.builds(lambda h, b: h + b, st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b""]), csv_text.map(str.encode)))
def test_read_any_bytes(workdir: Path, content: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=workdir, suffix=".csv") as f:
        f.write(content)
        f.flush()
        try:
            header, rows = cm._read(Path(f.name))
        except UserError as err:
            assert f.name in str(err)
            return
    assert header and rows
    named = [h for h in header if h]
    assert len(named) == len(set(named)), "a repeated column name would hide a column"
    assert [r.number for r in rows] == sorted({r.number for r in rows}) and rows[0].number >= 1
    assert all(set(r.cells) == set(header) and all(c == c.strip() for c in r.cells.values()) for r in rows)


@FUZZ
@given(declared=tasks)
def test_task_declarations(declared: Any) -> None:
    """Any ``data.tasks`` value: specs that fit their columns, or a UserError naming the config key."""
    try:
        parsed = cm._parse_tasks(declared, MANIFEST)
    except UserError as err:
        assert f"{MANIFEST}: data.tasks" in str(err)
        event("UserError")
        return
    event(f"{len(parsed)} task(s)")
    for task in parsed:
        spec = task.spec
        assert spec.kind in KINDS and task.columns and all(isinstance(c, str) for c in task.columns)
        assert 1 <= spec.num_outputs <= cm.MAX_OUTPUTS and isinstance(spec.num_outputs, int)
        expected = {"multiclass": spec.num_outputs, "binary": 1}.get(spec.kind, len(task.columns))
        assert spec.num_outputs == expected and (spec.kind != "multiclass" or spec.num_outputs >= 2)


@FUZZ
@given(declared=good_tasks, cells=st.lists(st.tuples(good_cell, good_cell, good_cell), min_size=1, max_size=6)
       | st.lists(st.tuples(label_cell, label_cell, label_cell), min_size=1, max_size=6))
def test_labels_from_any_cells(declared: Any, cells: list[tuple[str, str, str]]) -> None:
    rows = [cm.Row(i + 1, i + 2, dict(zip(COLUMNS, (c.strip() for c in row), strict=True)))
            for i, row in enumerate(cells)]
    try:
        parsed = cm._parse_tasks(declared, MANIFEST)
        cm._check_columns(list(COLUMNS), {c: f"task '{t.spec.name}'" for t in parsed for c in t.columns}, MANIFEST)
        targets = cm._targets(parsed, rows, MANIFEST)
    except UserError as err:
        assert str(MANIFEST) in str(err)
        event("UserError")
        return
    event(f"{len(parsed)} task(s) parsed")
    assert set(targets) == {t.spec.name for t in parsed}
    for task in parsed:
        target = targets[task.spec.name]
        check_target(task.spec, target, len(rows))
        empty = [all(not r.cells[c] for c in task.columns) for r in rows]
        marked = (target == -1) if task.spec.kind == "multiclass" else torch.isnan(target).all(dim=1)
        assert marked.tolist() == empty, "missing exactly where every cell is empty"


@FUZZ
@given(splits=st.lists(split_cell, min_size=1, max_size=6),
       images=st.lists(st.text(max_size=8) | st.sampled_from(["~", "~nouser_xyz/a.png", "a\x00b", "/abs.png"]),
                       min_size=1, max_size=6))
def test_split_and_image_cells(splits: list[str], images: list[str]) -> None:
    n = min(len(splits), len(images))
    rows = [cm.Row(i + 1, i + 2, {"split": splits[i].strip(), "image": images[i].strip()}) for i in range(n)]
    try:
        names = cm._split_names(rows, "split", MANIFEST)
        assert len(names) == n and set(names) <= {"train", "val", "test", "unlabeled"}
        paths = cm._image_paths(rows, "image", Path("/base"), MANIFEST)
    except UserError as err:
        assert str(MANIFEST) in str(err) and "row " in str(err)
        return
    assert len(paths) == n and all(p.is_absolute() or str(p).startswith("~") for p in paths)


# ---- end to end --------------------------------------------------------------------------------------------

VALID_IMAGES = tuple(f"p{i}.png" for i in range(10))
BAD_IMAGES = ("missing.png", "corrupt.png", "folder", "", "~nouser_xyz/p0.png", "p0\x00.png", ".", "p0.png\n")
SPLITS = ("train", "train", "val", "test", "unlabeled")


def manifest_text(columns: list[str], rows: list[dict[str, str]], quoted: bool, ragged: int) -> str:
    """The CSV text: written by csv.writer (quoting what needs it) or joined by hand (so stray commas and quotes
    in cells break the row); ``ragged`` in 1..len(rows) drops a cell from that row."""
    lines = [[r.get(c, "") for c in columns] for r in rows]
    if 0 < ragged <= len(lines):
        lines[ragged - 1] = lines[ragged - 1][:-1]
    if quoted:
        buf = io.StringIO()
        csvlib.writer(buf).writerows([columns, *lines])
        return buf.getvalue()
    return "\n".join(",".join(line) for line in [columns, *lines]) + "\n"


@st.composite
def manifests(draw: st.DrawFn) -> tuple[str, Any]:
    """(manifest text, data.tasks): each part (header, images, splits, labels, tasks, row shape) is messy in
    about one example in four, so that many examples still build and their datasets are checked."""
    def part(clean: st.SearchStrategy, messy: st.SearchStrategy) -> st.SearchStrategy:
        return messy if draw(st.integers(0, 3)) == 0 else clean

    columns = draw(part(st.permutations(["image", "split", *COLUMNS]),
                        st.lists(st.sampled_from(["image", "split", *COLUMNS, "", "x"]), max_size=6)))
    images = part(st.sampled_from(VALID_IMAGES), st.sampled_from(VALID_IMAGES) | st.sampled_from(BAD_IMAGES))
    splits, labels = part(st.sampled_from(SPLITS), split_cell), part(good_cell, label_cell)
    repeated = draw(st.integers(0, 3)) == 0  # an image listed twice (refused) in about one example in four
    rows = draw(st.lists(st.fixed_dictionaries({"image": images, "split": splits,
                                                **dict.fromkeys(COLUMNS, labels)}), min_size=1, max_size=10,
                         unique_by=None if repeated else (lambda row: row["image"])))
    ragged = draw(part(st.just(0), st.integers(0, len(rows))))
    text = manifest_text(list(columns), rows, quoted=draw(st.booleans()), ragged=ragged)
    return text, draw(part(good_tasks, tasks))


@settings(FUZZ, max_examples=300)  # each example that gets this far decodes a few tiny images
@given(case=manifests(), split_column=st.sampled_from(["split", "split", None]),
       n_val=st.sampled_from([None, None, 0, 1, 5, -1]))
def test_csv_end_to_end(workdir: Path, case: tuple[str, Any], split_column: str | None, n_val: int | None) -> None:
    text, declared = case
    manifest = workdir / "manifest.csv"
    manifest.write_text(text, encoding="utf-8")
    try:
        data = cm.csv(str(manifest), tasks=declared, split_column=split_column, n_val=n_val, size=4,
                      num_workers=0, cache_dir=None)
    except UserError as err:
        assert str(manifest) in str(err) or "data." in str(err), "name the file or the config key"
        event("UserError: " + str(err).split(": ")[-1][:40])
        return
    event("dataset")
    check_dataset(data, 4)
