"""Sweeps as users run them: ``-m`` over methods and seeds, then ``mtlssl summarize`` over the sweep."""

import csv
import json
import statistics
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TINY, TINY_TRAIN
from tests.test_cli import BIN, run_cli

TINY_PIPELINE = [*TINY, *[f"{s}.{o}" for s in ("pretrain", "train_mtl") for o in TINY_TRAIN],
                 "pretrain.ssl.hidden_dim=16", "pretrain.ssl.out_dim=8", "eval.batch_size=64"]


def summary_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path / "summary.csv", newline="") as f:
        return {(row["group"], row["metric"]): row for row in csv.DictReader(f)}


def test_methods_by_seeds_sweep_then_summarize(tmp_path: Path) -> None:
    out = run_cli("mtlssl", "train-mtl", "-m", "weighting=equal,uncertainty", "seed=0,1", *TINY, *TINY_TRAIN,
                  "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted((tmp_path / "sweep").glob("*/seed=*/metrics.json"))
    assert len(runs) == 4 and {p.parent.name for p in runs} == {"seed=0", "seed=1"}

    out = run_cli("mtlssl", "summarize", "sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "mean ± std (n) over seeds" in out.stdout
    rows = summary_rows(tmp_path / "sweep")
    for method in ("equal", "uncertainty"):
        scores = [json.loads(p.read_text())["test/shape/accuracy"] for p in runs
                  if f"weighting={method}" in (p.parent / ".hydra/overrides.yaml").read_text()]
        assert len(scores) == 2
        row = rows[(f"weighting={method}", "test/shape/accuracy")]
        assert float(row["mean"]) == pytest.approx(statistics.fmean(scores), abs=1e-12)
        assert float(row["std"]) == pytest.approx(statistics.stdev(scores), abs=1e-12)
        assert row["n"] == "2"
    assert "weighting=uncertainty" in (tmp_path / "sweep" / "summary.md").read_text()
    pytest.importorskip("matplotlib")  # the plot is optional (mtlssl[plot]); the test extra installs it
    assert (tmp_path / "sweep" / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_pipeline_sweep_summarizes_pretrained_against_scratch(tmp_path: Path) -> None:
    out = run_cli("mtlssl", "pipeline", "-m", "seed=0,1", *TINY_PIPELINE, "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli("mtlssl", "summarize", "sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = summary_rows(tmp_path / "sweep")
    for init in ("pretrained", "scratch"):
        row = rows[(f"init={init}", "test/shape/accuracy")]
        scores = [json.loads(p.read_text())[init]["test/shape/accuracy"]
                  for p in (tmp_path / "sweep").glob("*/seed=*/metrics.json")]
        assert row["n"] == "2" and float(row["mean"]) == pytest.approx(statistics.fmean(scores), abs=1e-12)


def test_two_runs_started_together_get_their_own_directories(tmp_path: Path) -> None:
    """Single runs are named by the microsecond they start: two launched at once do not share a directory."""
    command = [str(BIN / "mtlssl"), "train-mtl", *TINY, *TINY_TRAIN]
    jobs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    for job in jobs:
        assert job.wait(timeout=300) == 0, job.stderr.read()[-3000:]
    runs = sorted((tmp_path / "outputs" / "train_mtl").glob("*/*/metrics.json"))
    assert len(runs) == 2 and runs[0].parent != runs[1].parent
    # Each directory holds one run's files, not a mix: one log that starts once.
    for run in runs:
        assert (run.parent / "train_mtl.log").read_text().count("training 5 tasks") == 1
