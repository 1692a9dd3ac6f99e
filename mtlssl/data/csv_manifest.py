"""A dataset described by a CSV manifest: one row per image, an image path column and any label columns.

```
image,split,species,tail_length,has_tail
img/0001.jpg,train,2,0.31,1
img/0002.jpg,train,,,0          <- empty cells: labels missing for this image (skipped by losses and metrics)
img/0003.png,unlabeled,,,       <- only in the unlabeled split (pretraining)
```

Tasks are declared in the data config, ``{name: {kind, column, num_outputs}}``: ``multiclass`` (one column of
integer ids 0..num_outputs-1), ``binary`` (one column of 0/1), ``multilabel`` (several 0/1 columns),
``regression`` (one or several numeric columns). An EMPTY cell is a missing label (-1 for multiclass, NaN
otherwise); a multi-column task's label is present or missing as a whole. Relative image paths are resolved
from the manifest's folder (or ``root``). Splits come from ``split_column`` (train / val / test, and
optionally unlabeled) or, with ``split_column=null``, from a deterministic split by ``seed``.

Images are decoded once (see ``mtlssl.data.imagefolder``: RGB, center crop, resize) and cached under a hash
of the image file list; labels are read from the manifest on every build, so editing them needs no re-decode.
"""

from __future__ import annotations

import csv as csvlib
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlssl.data.image_set import Dataset, ImageSet
from mtlssl.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_distinct_files,
    check_pixels,
    finish_splits,
    load_images,
    split_pool,
)
from mtlssl.data.sources import holdout
from mtlssl.errors import UserError
from mtlssl.tasks import KINDS, Task, TaskSpec, build_task, task_class

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
               "unlabeled": "unlabeled", "unlabelled": "unlabeled"}
TASK_KEYS = ("kind", "column", "num_outputs")
MAX_OUTPUTS = 2**24  # far beyond any real head; a bigger num_outputs is a typo, and class ids stay exact in floats


@dataclass(frozen=True)
class Row:
    """One manifest row: its 1-based data row number, the file line it ends on, and its cells."""

    number: int
    line: int
    cells: dict[str, str]


@dataclass(frozen=True)
class TaskColumns:
    """A declared task and the manifest columns its label is read from."""

    task: Task
    columns: tuple[str, ...]

    @property
    def spec(self) -> TaskSpec:
        return self.task.spec


def _at(manifest: Path, row: Row, column: str) -> str:
    """Where a cell is, as error messages name it."""
    return f"{manifest}: row {row.number} (line {row.line}), column '{column}'"


# --- reading and checking the manifest ---------------------------------------------------------------------


def _blank(cells: list[str]) -> bool:
    return not any(c.strip() for c in cells)


def _header(reader: Iterator[list[str]], manifest: Path) -> list[str]:
    """The first non-blank line's column names; a name given twice is an error (one column would hide the other)."""
    header = next(([c.strip() for c in cells] for cells in reader if not _blank(cells)), [])
    repeated = sorted(name for name, n in Counter(header).items() if name and n > 1)
    if repeated:
        raise UserError(f"{manifest}: column(s) {', '.join(map(repr, repeated))} appear more than once in the header; "
                        "give every column its own name")
    return header


def _read(manifest: Path) -> tuple[list[str], list[Row]]:
    """The header and the rows; a row with the wrong number of cells is an error (a stray comma shifts labels)."""
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets often write a BOM
            reader = csvlib.reader(f)
            header = _header(reader, manifest)
            rows = []
            for number, cells in enumerate(reader, start=1):
                if _blank(cells):
                    continue  # blank lines are not images
                if len(cells) != len(header):
                    raise UserError(f"{manifest}: row {number} (line {reader.line_num}) has {len(cells)} cells for "
                                    f"the {len(header)} columns of the header; fix the row (quote cells that "
                                    "contain commas)")
                rows.append(Row(number, reader.line_num, dict(zip(header, (c.strip() for c in cells), strict=True))))
    except OSError as err:
        raise UserError(f"data.manifest='{manifest}' cannot be read ({err}); point it at a CSV file") from err
    except (csvlib.Error, UnicodeDecodeError) as err:
        raise UserError(f"{manifest} is not a readable UTF-8 CSV file ({err}); save it as CSV (UTF-8)") from err
    if not header or not rows:
        raise UserError(f"{manifest} has no {'header' if not header else 'rows'}; it needs a header line and "
                        "one row per image")
    return header, rows


def _parse_tasks(tasks: Mapping[str, Any] | None, manifest: Path) -> list[TaskColumns]:
    """The ``tasks`` config -> task specs with their columns, every mistake named with its fix."""
    if tasks is not None and not isinstance(tasks, Mapping):
        raise UserError(f"{manifest}: data.tasks must be a mapping {{name: {{kind, column, num_outputs}}}}, got "
                        f"{type(tasks).__name__}; see conf/data/csv.yaml")
    parsed = []
    for name, declared in (tasks or {}).items():
        where = f"{manifest}: data.tasks.{name}"
        if not isinstance(declared, Mapping):
            raise UserError(f"{where} must be a mapping like {{kind: multiclass, column: <col>, num_outputs: 3}}")
        unknown = sorted(set(declared) - set(TASK_KEYS))
        if unknown:
            raise UserError(f"{where} has unknown key(s) {unknown}; the keys are {', '.join(TASK_KEYS)}")
        kind = declared.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise UserError(f"{where}.kind={kind!r} is not a task kind; use one of {', '.join(KINDS)}")
        columns = _columns(declared.get("column", str(name)), where)  # the column defaults to the task's name
        num_outputs = declared.get("num_outputs")
        if num_outputs is not None and (isinstance(num_outputs, bool) or not isinstance(num_outputs, int)
                                        or num_outputs > MAX_OUTPUTS):
            raise UserError(f"{where}.num_outputs={num_outputs!r} is not a whole number of outputs (1..{MAX_OUTPUTS}); "
                            "give the number of classes or outputs, e.g. 3")
        parsed.append(TaskColumns(_task(str(name), kind, columns, where, num_outputs), columns))
    return parsed


def _columns(column: Any, where: str) -> tuple[str, ...]:
    """A task's column name(s): a name or a list of names (numbers count as names: YAML reads ``2019`` as int)."""
    def is_name(c: Any) -> bool:
        return isinstance(c, str | int) and not isinstance(c, bool)

    if is_name(column):
        return (str(column),)
    if isinstance(column, Sequence) and all(is_name(c) for c in column):
        return tuple(str(c) for c in column)
    raise UserError(f"{where}.column={column!r} is not a column name or a list of names; name the column(s) "
                    "holding the label")


def _task(name: str, kind: str, columns: tuple[str, ...], where: str, num_outputs: int | None) -> Task:
    """The task of ``kind`` whose label these columns hold (``num_outputs`` worked out where they fix it)."""
    if not columns:
        raise UserError(f"{where}.column is empty; name the column(s) holding the label")
    try:
        return build_task(task_class(kind, name).spec_from_columns(name, columns, num_outputs))
    except UserError as err:  # e.g. too few classes: say where it was declared
        raise UserError(f"{where}: {err}") from err


def _check_columns(header: list[str], needed: dict[str, str], manifest: Path) -> None:
    """Every column the config names must be in the header (``needed``: column -> what needs it)."""
    for column, purpose in needed.items():
        if column not in header:
            raise UserError(f"{manifest}: column '{column}' ({purpose}) is not in the header (line 1); "
                            f"the columns are: {', '.join(header)}. Fix the name in the data config or the CSV")


# --- labels --------------------------------------------------------------------------------------------------


def _label(task: TaskColumns, row: Row, manifest: Path) -> list[float]:
    """One row's label for one task: its values, or the missing marker when every cell is empty."""
    cells = [row.cells[c] for c in task.columns]
    missing = [not c for c in cells]
    if all(missing):
        return task.task.missing_row(len(cells))
    if any(missing):
        empty = [c for c, m in zip(task.columns, missing, strict=True) if m]
        raise UserError(f"{_at(manifest, row, empty[0])}: task '{task.spec.name}' has empty and filled cells "
                        f"(empty: {', '.join(empty)}); fill them all or leave them all empty (a label is present "
                        "or missing as a whole; declare separate tasks for labels that go missing independently)")
    values = []
    for column, cell in zip(task.columns, cells, strict=True):
        value, problem = task.task.parse_text(cell)
        if value is None:
            raise UserError(f"{_at(manifest, row, column)} (task '{task.spec.name}', {task.spec.kind}): {problem}; "
                            f"{task.task.text_fix}")
        values.append(float(value))
    return values


def _targets(tasks: list[TaskColumns], rows: list[Row], manifest: Path) -> dict[str, Tensor]:
    """Target tensors: multiclass long [N], the other kinds float [N, num_outputs]."""
    targets = {}
    for task in tasks:
        values = torch.tensor([_label(task, row, manifest) for row in rows], dtype=torch.float64)
        values = values.reshape(len(rows), len(task.columns))
        targets[task.spec.name] = task.task.target_tensor(values)
    return targets


# --- images and splits ---------------------------------------------------------------------------------------


def _image_paths(rows: list[Row], column: str, base: Path, manifest: Path) -> list[Path]:
    """Each row's image path; relative ones are resolved from ``base`` (the manifest's folder by default)."""
    paths = []
    for row in rows:
        cell = row.cells[column]
        if not cell:
            raise UserError(f"{_at(manifest, row, column)}: the image path is empty; every row needs an image")
        if "\0" in cell:
            raise UserError(f"{_at(manifest, row, column)}: the image path contains a NUL character; fix the cell")
        path = _expand(cell)
        paths.append(path if path.is_absolute() else base / path)
    return paths


def _expand(text: str) -> Path:
    """``text`` as a path with ``~`` expanded; an unknown ``~user`` stays as written (pathlib would raise
    RuntimeError), so the missing file is reported where it is listed."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def _split_names(rows: list[Row], column: str, manifest: Path) -> list[str]:
    """Each row's split from ``column`` (train, val, test or unlabeled; a few spellings are accepted)."""
    names = []
    for row in rows:
        name = SPLIT_NAMES.get(row.cells[column].lower())
        if name is None:
            raise UserError(f"{_at(manifest, row, column)}: split '{row.cells[column]}' is not one of train, val, "
                            "test, unlabeled; fix the cell (or set data.split_column=null for a deterministic "
                            "split)")
        names.append(name)
    return names


def _column_splits(images: Tensor, targets: dict[str, Tensor], names: list[str], n_val: int | None, seed: int,
                   manifest: Path, column: str) -> tuple[dict[str, ImageSet], Tensor | None]:
    """The labelled splits named by the split column, and the images of the ``unlabeled`` rows (if any)."""
    def rows_of(split: str) -> Tensor:
        return torch.tensor([i for i, n in enumerate(names) if n == split], dtype=torch.long)

    splits = {s: ImageSet(images[rows_of(s)], {k: v[rows_of(s)] for k, v in targets.items()})
              for s in ("train", "val", "test")}
    if len(splits["val"]) == 0 and n_val is not None and len(splits["train"]) > 0:
        train = splits["train"]  # no val rows: hold n_val training rows out instead, as asked
        splits["train"], splits["val"] = holdout(train.images, train.targets, n_val, seed)
    for split, part in splits.items():
        if len(part) == 0:
            hint = " or set data.n_val=<k> to hold k training rows out" if split == "val" else ""
            raise UserError(f"{manifest}: split '{split}' is empty (no row has {column}={split}); add rows to "
                            f"it{hint}, or set data.split_column=null for a deterministic split")
    unlabeled = rows_of("unlabeled")
    return splits, (images[unlabeled] if len(unlabeled) else None)


def csv(
    manifest: str,
    image_column: str = "image",
    tasks: Mapping[str, Mapping[str, Any]] | None = None,
    split_column: str | None = "split",
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    root: str | None = None,
    size: int = 64,
    seed: int = 0,
    center_crop: bool = True,
    num_workers: int = 2,
    cache_dir: str | None = "auto",
    channels: int = 3,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Dataset:
    """The dataset a CSV manifest describes (see the module doc for its format).

    ``split_column``: the column naming each row's split; null splits the rows by ``seed`` into
    train / val / test with ``n_val`` / ``n_test`` rows (None: 10% each). With a split column, ``n_val``
    holds training rows out only when no row is in val. ``n_train``: labelled training rows kept (None: all;
    the ``unlabeled`` split always has every train image plus the rows marked unlabeled).
    ``root``: the folder relative image paths start from (None: the manifest's folder).
    """
    check_pixels("csv", channels, mean, std)
    path = _expand(manifest)
    task_columns = _parse_tasks(tasks, path)
    header, rows = _read(path)
    needed = {image_column: "data.image_column"}
    needed.update({c: f"task '{t.spec.name}'" for t in task_columns for c in t.columns})
    if split_column is not None:
        needed[split_column] = "data.split_column; set it to null for a deterministic split"
    _check_columns(header, needed, path)

    names = _split_names(rows, split_column, path) if split_column is not None else ["train"] * len(rows)
    labelled = [row for row, name in zip(rows, names, strict=True) if name != "unlabeled"]
    label_rows = torch.tensor([i for i, name in enumerate(names) if name != "unlabeled"], dtype=torch.long)
    targets = {k: _full(v, label_rows, len(rows)) for k, v in _targets(task_columns, labelled, path).items()}

    base = _expand(root) if root else path.parent
    paths = _image_paths(rows, image_column, base, path)
    check_distinct_files(paths, lambda i: _at(path, rows[i], image_column))
    images = load_images("csv", paths, size=size, channels=channels, center_crop=center_crop,
                         num_workers=num_workers, cache_dir=cache_dir,
                         where=lambda i: _at(path, rows[i], image_column))
    if split_column is None:
        splits, extra = split_pool(ImageSet(images, targets), n_val, n_test, seed), None
    else:
        splits, extra = _column_splits(images, targets, names, n_val, seed, path, split_column)
    return Dataset("csv", [t.spec for t in task_columns], finish_splits(splits, n_train, seed, extra),
                   tuple(mean), tuple(std))


def _full(values: Tensor, rows: Tensor, n: int) -> Tensor:
    """Targets of the labelled rows spread over all ``n`` rows (unlabeled rows get the missing marker; their
    targets are dropped with the split anyway)."""
    fill = -1 if values.dtype == torch.long else math.nan
    out = torch.full((n, *values.shape[1:]), fill, dtype=values.dtype)
    out[rows] = values
    return out
