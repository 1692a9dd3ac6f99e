"""``mtlssl summarize``: one table of mean ± std over seeds for the runs of one or more sweep directories.

- Runs: every directory under the given ones that holds ``.hydra/overrides.yaml`` (a given directory that is
  itself a run counts). A run without ``metrics.json``, with an unreadable or truncated one, or with no
  ``{split}/<task>/<metric>`` entries is listed as failed, with the reason, and skipped.
- A pipeline run counts as two runs, its train-mtl from the pretrained encoder and from scratch, labelled
  ``init=pretrained`` and ``init=scratch``.
- Groups: runs with the same overrides once ``seed``, ``hydra.*`` and how a job ran (``resume``, ``device``,
  ``sweep_name``, ``objective``, ``launcher``, ``hparams_search``) are dropped; the
  label is the remaining overrides, sorted (so the order they were typed in does not split a group) and
  joined with ",", or "(defaults)".
- Per group and metric ``{split}/<task>/<metric>`` (losses excluded): mean, sample std (n-1; 0 for n=1), n.
- Single-task baselines: groups whose every run scores exactly one task and that have a ``tasks=[x]``
  override. For every other group whose tasks all have a baseline, delta_m and delta_p
  (``mtlssl.metrics.mtl_summary``) are computed on the group's MEANS against the baselines' MEANS (not per
  seed: the seeds of the two need not pair up).
- Average rank: for each metric with a known direction (``HIGHER_IS_BETTER``) that >= 2 multi-task groups
  report, the groups are ranked by their mean (1 = best; ties share the average rank); a group's average
  rank is the mean of its ranks. Baselines are not ranked.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mtlssl.config import RUN_MANAGEMENT_KEYS, override_key
from mtlssl.errors import UserError
from mtlssl.io import write_atomic
from mtlssl.metrics.mtl_summary import delta_m, delta_p
from mtlssl.reporting.console import console, fmt
from mtlssl.tasks import HIGHER_IS_BETTER

# Overrides that vary between repeats of one method rather than between methods.
_IGNORED_KEYS = ("seed", "device", *RUN_MANAGEMENT_KEYS)
# A pipeline's metrics.json holds one train-mtl result per encoder init; each is summarised as its own group.
PIPELINE_VARIANTS = ("pretrained", "scratch")
# A run's overrides.yaml and metrics.json are kilobytes; a bigger file is not one a run wrote, and is not parsed.
MAX_FILE_BYTES = 32 * 2**20
# Hydra writes overrides.yaml as a flat list of strings; PyYAML's time grows faster than quadratically with the
# nesting depth of [ and { (up to the recursion limit, which tests and torch raise), so deep nesting is refused.
MAX_YAML_BRACKETS = 512
# Scores beyond this are a diverged run's, like inf, and are left out: means and stds over seeds would overflow.
MAX_SCORE = 1e300


@dataclass(frozen=True)
class Run:
    """One finished run: its directory, the overrides that define its group, and its ``task/metric`` scores."""

    path: Path
    overrides: tuple[str, ...]
    metrics: dict[str, float]

    @property
    def tasks(self) -> set[str]:
        return {key.split("/")[0] for key in self.metrics}


@dataclass(frozen=True)
class Failed:
    """A run directory that could not be summarised, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Stat:
    """One metric of one group over its seeds."""

    mean: float
    std: float
    n: int


@dataclass
class Group:
    """The runs of one method (same overrides up to the seed) and their statistics, keyed ``task/metric``."""

    label: str
    overrides: tuple[str, ...]
    runs: list[Run]
    stats: dict[str, Stat] = field(default_factory=dict)
    baseline_task: str | None = None  # set for a single-task baseline
    delta_m: float | None = None
    delta_p: float | None = None
    avg_rank: float | None = None

    @property
    def tasks(self) -> set[str]:
        return {key.split("/")[0] for key in self.stats}


@dataclass
class Summary:
    """What ``summarize`` found: the groups (sorted by label), the failed runs, and the files it wrote."""

    split: str
    groups: list[Group]
    failed: list[Failed]
    metrics: list[str]  # ``task/metric`` columns, sorted
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


# ---- discovery and loading -------------------------------------------------------------------------------


def find_run_dirs(dirs: list[Path]) -> list[Path]:
    """Every directory holding ``.hydra/overrides.yaml`` under (or equal to) the given ones, sorted, no repeats."""
    found: set[Path] = set()
    for d in dirs:
        if not d.exists():
            raise UserError(f"'{d}' does not exist; give a run or sweep directory (e.g. multirun/<date>/<time>)")
        if not d.is_dir():
            raise UserError(f"'{d}' is not a directory; give a run or sweep directory")
        found.update(p.parent.parent.resolve() for p in d.rglob("overrides.yaml") if p.parent.name == ".hydra")
    return sorted(found)


def group_overrides(overrides: list[str]) -> tuple[str, ...]:
    """The overrides that tell methods apart: all but the seed, Hydra's own and those of _IGNORED_KEYS; sorted."""
    return tuple(sorted(o for o in overrides
                        if override_key(o) not in _IGNORED_KEYS and not override_key(o).startswith("hydra.")))


def _text(s: str) -> str:
    """``s`` safe to write as UTF-8: YAML and JSON escapes can make lone surrogates, which no file can hold."""
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _finite(value: Any) -> float | None:
    """A JSON number as a float within ±MAX_SCORE; None for anything else (bools, text, NaN, inf, huge ints)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and abs(number) <= MAX_SCORE else None


def _split_metrics(raw: dict, split: str) -> dict[str, float]:
    """``task/metric -> value`` for the split's per-task metrics; losses and non-finite (or absurdly large, see
    ``MAX_SCORE``) values left out."""
    out = {}
    for key, value in raw.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != split or "loss" in parts[2]:
            continue
        number = _finite(value)
        if number is not None:
            out[_text(f"{parts[1]}/{parts[2]}")] = number
    return out


def _parse(file: Path, parse: Callable[[str], Any]) -> tuple[Any, str]:
    """``parse`` of a small UTF-8 file, or (None, why not): no content may stop the summary. A size cap
    bounds the work; deep nesting raises RecursionError in both parsers."""
    try:
        with file.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return None, f"larger than {MAX_FILE_BYTES >> 20} MB"
        return parse(data.decode("utf-8")), ""
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as err:  # ValueError: UnicodeDecodeError, JSON
        lines = _text(str(err)).strip().splitlines()  # YAML errors span several lines; the first says what
        return None, f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _load_overrides(text: str) -> Any:
    """``yaml.safe_load`` of an overrides.yaml, refusing flow nesting deep enough to take seconds."""
    if text.count("[") + text.count("{") > MAX_YAML_BRACKETS:
        raise ValueError(f"more than {MAX_YAML_BRACKETS} '[' or '{{'; Hydra writes a flat list of overrides")
    return yaml.safe_load(text)


def load_run(path: Path, split: str) -> list[Run | Failed]:
    """A run's overrides and metrics, or why it cannot be used (a crashed job must not stop the summary).
    A pipeline run gives one run per train-mtl variant, told apart by an ``init=pretrained|scratch`` label."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    overrides, problem = _parse(overrides_file, _load_overrides) if overrides_file.is_file() else (None, "not a file")
    if problem:
        return [Failed(path, f"unreadable .hydra/overrides.yaml ({problem})")]
    overrides = [] if overrides is None else overrides  # an empty file: no overrides
    # Only strings: Hydra writes nothing else, and str() of a YAML alias bomb would take forever.
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return [Failed(path, ".hydra/overrides.yaml is not a list of overrides (strings like 'seed=1')")]
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        return [Failed(path, "no metrics.json (the job failed or has not finished)")]
    raw, problem = _parse(metrics_file, json.loads)
    if problem:
        return [Failed(path, f"unreadable or truncated metrics.json ({problem})")]
    if not isinstance(raw, dict):
        return [Failed(path, "metrics.json is not a JSON object")]
    grouping = group_overrides([_text(o) for o in overrides])
    variants = {"": raw}
    if raw.get("stage") == "pipeline":
        variants = {f"init={name}": raw[name] for name in PIPELINE_VARIANTS if isinstance(raw.get(name), dict)}
    runs: list[Run | Failed] = []
    for label, values in variants.items():
        metrics = _split_metrics(values, split)
        runs.append(Run(path, tuple(sorted((*grouping, label))) if label else grouping, metrics) if metrics
                    else Failed(path, f"metrics.json has no '{split}/<task>/<metric>' entries"))
    if not any(isinstance(r, Run) for r in runs):  # one failure per directory, however many variants it holds
        return runs[:1] or [Failed(path, "pipeline metrics.json has no train-mtl results")]
    return runs


# ---- statistics --------------------------------------------------------------------------------------------


def stat(values: list[float]) -> Stat:
    """Mean, sample standard deviation (n-1; 0 for a single value) and count."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), std, len(values))


def shared_overrides(runs: list[Run]) -> tuple[str, ...]:
    """The overrides every group has (the sweep's fixed settings), when there are several groups."""
    settings = {run.overrides for run in runs}
    if len(settings) < 2:
        return ()
    common = set.intersection(*(set(s) for s in settings))
    return tuple(o for o in sorted(common))


def make_groups(runs: list[Run]) -> list[Group]:
    """Runs grouped by their overrides, each group with its per-metric statistics; sorted by label. A label
    shows only what tells the groups apart: overrides shared by every group are left out of it."""
    by_overrides: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        by_overrides.setdefault(run.overrides, []).append(run)
    shared = set(shared_overrides(runs))
    groups = []
    for overrides, members in sorted(by_overrides.items()):
        group = Group(",".join(o for o in overrides if o not in shared) or "(defaults)", overrides, members)
        keys = sorted({k for r in members for k in r.metrics})
        group.stats = {k: stat([r.metrics[k] for r in members if k in r.metrics]) for k in keys}
        group.baseline_task = _baseline_task(group)
        groups.append(group)
    return groups


def _baseline_task(group: Group) -> str | None:
    """The task of a single-task baseline: every run scores one task, named by a one-element ``tasks=`` override."""
    tasks_value = [o.split("=", 1)[1] for o in group.overrides if override_key(o) == "tasks" and "=" in o]
    if len(tasks_value) != 1:
        return None
    named = [t.strip().strip("'\"") for t in tasks_value[0].strip().strip("[]").split(",") if t.strip()]
    if len(named) != 1 or any(run.tasks != {named[0]} for run in group.runs):
        return None
    return named[0]


def _pick_baseline(group: Group, candidates: list[Group], notes: list[str]) -> Group:
    """Of several baselines for one task, the one whose other overrides the group shares (e.g. the same
    encoder init); the first by label if that does not decide."""
    if len(candidates) > 1:
        mine = set(group.overrides)
        shared = [c for c in candidates if {o for o in c.overrides if override_key(o) != "tasks"} <= mine]
        candidates = shared if len(shared) == 1 else candidates
        if len(candidates) > 1:
            notes.append(f"{group.label}: several single-task baselines for '{candidates[0].baseline_task}'; "
                         f"used '{candidates[0].label}'")
    return candidates[0]


def add_deltas(groups: list[Group], notes: list[str]) -> None:
    """delta_m and delta_p of each multi-task group whose tasks all have a baseline, on the means."""
    baselines: dict[str, list[Group]] = {}
    for g in groups:
        if g.baseline_task is not None:
            baselines.setdefault(g.baseline_task, []).append(g)
    for g in groups:
        if g.baseline_task is not None or not g.tasks or not g.tasks <= baselines.keys():
            continue
        stl = {}
        for task in sorted(g.tasks):
            stl.update({k: s.mean for k, s in _pick_baseline(g, baselines[task], notes).stats.items()})
        mtl = {k: s.mean for k, s in g.stats.items()}
        try:
            g.delta_m, g.delta_p = delta_m(mtl, stl), delta_p(mtl, stl)
        except UserError:  # no metric with a known direction is shared: nothing to compare
            notes.append(f"{g.label}: no metric shared with the single-task baselines; no delta_m/delta_p")


def average_ranks(values: list[float], higher_is_better: bool) -> list[float]:
    """1-based ranks (1 = best) with ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: -values[i] if higher_is_better else values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def add_ranks(groups: list[Group]) -> None:
    """Each multi-task group's mean rank over the metrics (with a known direction) that >= 2 such groups report."""
    methods = [g for g in groups if g.baseline_task is None]
    per_group: dict[int, list[float]] = {id(g): [] for g in methods}
    for key in sorted({k for g in methods for k in g.stats}):
        metric = key.split("/")[-1]
        having = [g for g in methods if key in g.stats]
        if metric not in HIGHER_IS_BETTER or len(having) < 2:
            continue
        for g, rank in zip(having, average_ranks([g.stats[key].mean for g in having], HIGHER_IS_BETTER[metric]),
                           strict=True):
            per_group[id(g)].append(rank)
    for g in methods:
        ranks = per_group[id(g)]
        g.avg_rank = sum(ranks) / len(ranks) if ranks else None


# ---- output ------------------------------------------------------------------------------------------------


def cell(s: Stat | None) -> str:
    """``mean ± std (n)``, or "-" for a metric the group does not report."""
    return "-" if s is None else f"{s.mean:.4f} ± {s.std:.4f} ({s.n})"


def _rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows, shared by the console and the markdown."""
    header = ["group", *summary.metrics, "delta_m %", "delta_p %", "avg rank"]
    rows = []
    for g in summary.groups:
        label = g.label + (" [baseline]" if g.baseline_task else "")
        rows.append([label, *(cell(g.stats.get(m)) for m in summary.metrics),
                     fmt(g.delta_m), fmt(g.delta_p), fmt(g.avg_rank)])
    return header, rows


def rich_table(summary: Summary) -> Table:
    """The console table: one row per group."""
    header, rows = _rows(summary)
    table = Table(title=f"summary ({summary.split}): mean ± std (n) over seeds", title_justify="left")
    for i, name in enumerate(header):
        # Fold, not ellipsis: the group label is the only thing telling the rows apart.
        table.add_column(Text(name), justify="left" if i == 0 else "right", overflow="fold" if i == 0 else "ellipsis")
    for row in rows:
        table.add_row(*map(Text, row))  # Text: labels like "tasks=[shape]" are not rich markup
    return table


def to_csv(summary: Summary) -> str:
    """One row per group and metric (full-precision numbers, the metric with its split prefix)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["group", "metric", "mean", "std", "n"])
    for g in summary.groups:
        for key, s in g.stats.items():
            writer.writerow([g.label, f"{summary.split}/{key}", repr(s.mean), repr(s.std), s.n])
    return buf.getvalue()


def to_markdown(summary: Summary) -> str:
    """The console table in markdown, then the failed jobs and the notes."""
    header, rows = _rows(summary)
    lines = [f"# Summary ({summary.split})", "", "mean ± std (n) over seeds.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    if summary.failed:
        lines += ["", "## Failed or missing jobs", ""]
        lines += [f"- `{f.path}`: {f.reason}" for f in summary.failed]
    if summary.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in summary.notes]
    return "\n".join(lines) + "\n"


def _literal(text: str) -> str:
    """Text as matplotlib should print it: ``$`` would start mathtext (and bad TeX raises)."""
    return text.replace("$", r"\$")


def write_plot(summary: Summary, path: Path) -> bool:
    """A bar per group with std error bars, one panel per task metric; only when matplotlib is installed
    (it is not a dependency). Returns whether the file was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    metrics = summary.metrics
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 + 2.5 * len(metrics), 4), squeeze=False)
    for ax, key in zip(axes[0], metrics, strict=True):
        having = [g for g in summary.groups if key in g.stats]
        ax.bar(range(len(having)), [g.stats[key].mean for g in having], yerr=[g.stats[key].std for g in having],
               capsize=3)
        ax.set_xticks(range(len(having)), [_literal(g.label) for g in having], rotation=60, ha="right", fontsize=7)
        ax.set_title(_literal(key), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return True


# ---- entry points ------------------------------------------------------------------------------------------


def summarize(dirs: list[Path], out: Path | None = None, split: str = "test") -> Summary:
    """Summarise the runs under ``dirs`` (see the module docstring), print the table and write
    ``summary.csv``, ``summary.md`` (and ``summary.png`` with matplotlib) to ``out`` (default: ``dirs[0]``)."""
    dirs = [Path(d) for d in dirs]
    if not dirs:
        raise UserError("give at least one run or sweep directory")
    run_dirs = find_run_dirs(dirs)
    if not run_dirs:
        raise UserError(f"no run directories (with .hydra/overrides.yaml) under {', '.join(map(str, dirs))}")
    loaded = [r for d in run_dirs for r in load_run(d, split)]
    runs = [r for r in loaded if isinstance(r, Run)]
    failed = [r for r in loaded if isinstance(r, Failed)]
    groups = make_groups(runs)
    summary = Summary(split, groups, failed, sorted({k for g in groups for k in g.stats}))
    shared = shared_overrides(runs)
    if shared:
        summary.notes.append(f"shared by every group: {','.join(shared)}")
    add_deltas(groups, summary.notes)
    add_ranks(groups)
    _report(summary, Path(out) if out is not None else dirs[0])
    return summary


def _report(summary: Summary, out: Path) -> None:
    """The console table, the failed-jobs list, and the files."""
    if summary.groups:
        console.print(rich_table(summary))
    else:
        console.print(f"[yellow]no run finished: all {len(summary.failed)} failed[/]")
    for f in summary.failed:
        console.print(f"[yellow]failed:[/] {escape(str(f.path))}: {escape(f.reason)}", highlight=False)
    for note in summary.notes:
        console.print(Text(f"note: {note}"))
    write_atomic(out / "summary.csv", to_csv(summary))
    write_atomic(out / "summary.md", to_markdown(summary))
    summary.files += [out / "summary.csv", out / "summary.md"]
    if summary.groups:
        if write_plot(summary, out / "summary.png"):
            summary.files.append(out / "summary.png")
        else:
            console.print("note: pip install matplotlib for summary.png", highlight=False)
    console.print(Text(f"wrote {', '.join(str(p) for p in summary.files)}"))


def main(argv: list[str] | None = None) -> int:
    """``mtlssl summarize <dir> [<dir> ...] [--out DIR] [--split test]``; 0 on success, 2 on a user error."""
    parser = argparse.ArgumentParser(prog="mtlssl summarize",
                                     description="mean ± std over seeds of the runs in sweep directories")
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, default=None, help="where to write summary.* (default: the first dir)")
    parser.add_argument("--split", default="test", help="which metrics to summarise: test or val (default: test)")
    args = parser.parse_args(argv)
    try:
        summarize(args.dirs, args.out, args.split)
    except UserError as err:
        print(f"mtlssl summarize: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
