"""``mtlssl summarize`` over fake sweep directories (hand-written overrides.yaml and metrics.json, no training)."""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from mtlssl import cli
from mtlssl.errors import UserError
from mtlssl.metrics.mtl_summary import delta_m, delta_p
from mtlssl.reporting import summarize as summ
from mtlssl.reporting.console import console

# Two methods x two seeds on tasks shape (accuracy, macro_f1: higher is better) and size (mae: lower is better).
RUNS = {
    ("weighting=equal", 0): {"shape/accuracy": 0.80, "shape/macro_f1": 0.50, "size/mae": 0.20},
    ("weighting=equal", 1): {"shape/accuracy": 0.90, "shape/macro_f1": 0.50, "size/mae": 0.30},
    ("weighting=pcgrad", 0): {"shape/accuracy": 0.70, "shape/macro_f1": 0.40, "size/mae": 0.30},
    ("weighting=pcgrad", 1): {"shape/accuracy": 0.80, "shape/macro_f1": 0.60, "size/mae": 0.40},
}
BASELINES = {"shape": {"shape/accuracy": 0.80, "shape/macro_f1": 0.40}, "size": {"size/mae": 0.20}}


def make_run(path: Path, overrides: list[str], metrics: dict[str, float] | None, text: str | None = None) -> Path:
    """A run directory as train-mtl leaves it; ``metrics=None`` and no ``text``: the job died before writing."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / "checkpoints").mkdir()
    if text is not None:
        (path / "metrics.json").write_text(text)
    elif metrics is not None:
        full = {f"test/{k}": v for k, v in metrics.items()}
        full.update({f"val/{k}": v + 0.01 for k, v in metrics.items()})
        full.update({f"test/{k.split('/')[0]}/loss": 1.0 for k in metrics} | {"test/loss": 1.0})
        (path / "metrics.json").write_text(json.dumps({"stage": "train_mtl", "best_epoch": 3, "history": [{}],
                                                       **full}))
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    root = tmp_path / "sweep"
    for (method, seed), metrics in RUNS.items():
        make_run(root / method / f"seed={seed}", [method, f"seed={seed}", "hydra.sweep.dir=x", "device=cpu"], metrics)
    for task, metrics in BASELINES.items():
        make_run(root / f"tasks=[{task}]" / "seed=0", [f"tasks=[{task}]", "seed=0"], metrics)
    make_run(root / "weighting=equal" / "seed=2", ["weighting=equal", "seed=2"], None)  # crashed: no metrics.json
    make_run(root / "weighting=pcgrad" / "seed=2", ["weighting=pcgrad", "seed=2"], None,
             text='{"test/shape/accuracy": 0.')  # killed mid-write
    return root


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 250)  # no wrapping of the table in captured output


def groups_by_label(summary: summ.Summary) -> dict[str, summ.Group]:
    return {g.label: g for g in summary.groups}


def means(label: str) -> dict[str, float]:
    keys = RUNS[(label, 0)]
    return {k: statistics.fmean([RUNS[(label, s)][k] for s in (0, 1)]) for k in keys}


def test_groups_means_and_sample_stds(sweep: Path) -> None:
    groups = groups_by_label(summ.summarize([sweep]))
    assert set(groups) == {"weighting=equal", "weighting=pcgrad", "tasks=[shape]", "tasks=[size]"}
    eq = groups["weighting=equal"].stats
    assert set(eq) == {"shape/accuracy", "shape/macro_f1", "size/mae"}  # no losses, no val
    assert eq["shape/accuracy"].mean == pytest.approx(0.85)
    assert eq["shape/accuracy"].std == pytest.approx(math.sqrt(2 * 0.05**2))  # n-1 in the denominator
    assert eq["shape/accuracy"].n == 2
    assert eq["shape/macro_f1"].std == 0.0
    assert groups["weighting=pcgrad"].stats["size/mae"].mean == pytest.approx(0.35)
    base = groups["tasks=[shape]"].stats["shape/accuracy"]
    assert (base.mean, base.std, base.n) == (0.80, 0.0, 1)
    assert groups["tasks=[shape]"].baseline_task == "shape" and groups["weighting=equal"].baseline_task is None


def test_deltas_are_mtl_summary_on_the_means(sweep: Path) -> None:
    groups = groups_by_label(summ.summarize([sweep]))
    stl = {**BASELINES["shape"], **BASELINES["size"]}
    for label in ("weighting=equal", "weighting=pcgrad"):
        assert groups[label].delta_m == pytest.approx(delta_m(means(label), stl))
        assert groups[label].delta_p == pytest.approx(delta_p(means(label), stl))
    # By hand for equal: accuracy +6.25%, macro_f1 +25%, mae -25% (0.25 vs 0.20, lower is better).
    assert groups["weighting=equal"].delta_m == pytest.approx(-(6.25 + 25 - 25) / 3)
    assert groups["weighting=equal"].delta_p == pytest.approx(((6.25 + 25) / 2 - 25) / 2)
    assert groups["tasks=[shape]"].delta_m is None and groups["tasks=[shape]"].avg_rank is None


def test_average_ranks_by_hand(sweep: Path) -> None:
    groups = groups_by_label(summ.summarize([sweep]))
    # accuracy: equal 1, pcgrad 2; macro_f1 tie at 0.5: 1.5 each; mae (lower better): equal 1, pcgrad 2.
    assert groups["weighting=equal"].avg_rank == pytest.approx((1 + 1.5 + 1) / 3)
    assert groups["weighting=pcgrad"].avg_rank == pytest.approx((2 + 1.5 + 2) / 3)
    assert summ.average_ranks([3.0, 1.0, 3.0, 2.0], higher_is_better=True) == [1.5, 4.0, 1.5, 3.0]
    assert summ.average_ranks([3.0, 1.0, 3.0, 2.0], higher_is_better=False) == [3.5, 1.0, 3.5, 2.0]


def test_files_hold_the_numbers(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    summ.summarize([sweep], out=out)
    rows = {(r["group"], r["metric"]): r for r in csv.DictReader((out / "summary.csv").open())}
    row = rows[("weighting=equal", "test/shape/accuracy")]
    assert float(row["mean"]) == pytest.approx(0.85) and float(row["std"]) == pytest.approx(0.0707107)
    assert row["n"] == "2"
    assert len(rows) == 3 + 3 + 2 + 1
    md = (out / "summary.md").read_text()
    assert "| weighting=equal | 0.8500 ± 0.0707 (2) |" in md
    assert "no metrics.json" in md and "truncated metrics.json" in md
    assert not (sweep / "summary.csv").exists()  # --out, not the first dir
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_failed_jobs_are_flagged_and_skipped(sweep: Path) -> None:
    summary = summ.summarize([sweep])
    reasons = {f.path.relative_to(sweep.resolve()).as_posix(): f.reason for f in summary.failed}
    assert set(reasons) == {"weighting=equal/seed=2", "weighting=pcgrad/seed=2"}
    assert "no metrics.json" in reasons["weighting=equal/seed=2"]
    assert "truncated" in reasons["weighting=pcgrad/seed=2"]
    assert groups_by_label(summary)["weighting=pcgrad"].stats["shape/accuracy"].n == 2
    assert (sweep / "summary.csv").exists()  # default out: the first given dir


def test_a_run_dir_itself_and_seed_only_overrides(tmp_path: Path) -> None:
    run = make_run(tmp_path / "one", ["seed=3"], RUNS[("weighting=equal", 0)])
    summary = summ.summarize([run])
    assert [g.label for g in summary.groups] == ["(defaults)"]
    assert summary.groups[0].avg_rank is None  # nothing to rank against


def test_bad_input_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        summ.summarize([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run directories"):
        summ.summarize([tmp_path / "empty"])


def test_main_prints_the_table_and_exits_0_or_2(sweep: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert summ.main([str(sweep), "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "weighting=pcgrad" in printed and "0.8500 ± 0.0707 (2)" in printed and "avg rank" in printed
    assert "failed:" in printed and "tasks=[shape] [baseline]" in printed  # labels are not rich markup
    assert summ.main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_val_split(sweep: Path) -> None:
    groups = groups_by_label(summ.summarize([sweep], split="val"))
    assert groups["weighting=equal"].stats["shape/accuracy"].mean == pytest.approx(0.86)


def test_through_the_umbrella_command(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["mtlssl", "summarize", str(sweep), "--out", str(tmp_path / "u")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    assert "weighting=equal" in capsys.readouterr().out
    assert (tmp_path / "u" / "summary.md").exists()
    monkeypatch.setattr(sys, "argv", ["mtlssl", "summarize", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2


def test_png_with_matplotlib(sweep: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    summary = summ.summarize([sweep], out=tmp_path / "with")
    assert (tmp_path / "with" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tmp_path / "with" / "summary.png" in summary.files


def test_without_matplotlib_a_note_and_no_png(sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    summ.summarize([sweep], out=tmp_path / "without")
    assert not (tmp_path / "without" / "summary.png").exists()
    assert "pip install matplotlib for summary.png" in capsys.readouterr().out


def test_labels_show_only_what_tells_groups_apart(tmp_path: Path) -> None:
    for method in ("equal", "pcgrad"):
        for seed in (0, 1):
            make_run(tmp_path / method / str(seed), ["data.size=16", f"weighting={method}", f"seed={seed}"],
                     {"shape/accuracy": 0.5 + seed / 10})
    summary = summ.summarize([tmp_path])
    assert [g.label for g in summary.groups] == ["weighting=equal", "weighting=pcgrad"]
    assert "shared by every group: data.size=16" in summary.notes


def test_a_pipeline_run_counts_once_per_encoder_init(tmp_path: Path) -> None:
    for seed, (pre, scratch) in enumerate([(0.8, 0.6), (0.9, 0.5)]):
        run = make_run(tmp_path / f"seed={seed}", [f"seed={seed}"], None)
        (run / "metrics.json").write_text(json.dumps({
            "stage": "pipeline", "config": {"seed": seed}, "probe": {"test/shape/accuracy": 0.1},
            "pretrained": {"test/shape/accuracy": pre, "best_epoch": 1},
            "scratch": {"test/shape/accuracy": scratch, "best_epoch": 1}}))
    summary = summ.summarize([tmp_path])
    stats = {g.label: g.stats["shape/accuracy"] for g in summary.groups}
    assert stats.keys() == {"init=pretrained", "init=scratch"} and not summary.failed
    assert stats["init=pretrained"].mean == pytest.approx(0.85) and stats["init=scratch"].n == 2
