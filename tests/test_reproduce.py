"""``mtlssl reproduce``: a tiny run replayed through the CLI gives the same numbers on CPU, in a new directory."""

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mtlssl import reproduce as rp
from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.reporting import provenance
from tests.conftest import TINY, TINY_TRAIN
from tests.reporting.test_provenance import head_commit
from tests.test_cli import run_cli


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=provenance.source_dir(), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def commit_with_head_configs() -> str | None:
    """An ancestor of HEAD whose conf/ is the working tree's, so today's code runs it: replaying it must change
    nothing. (None right after a commit that changed conf/, until the next commit leaves it alone.)"""
    for commit in (git("rev-list", "--max-count=30", "HEAD~1") or "").split():
        if git("diff", "--quiet", commit, "--", ":/conf") is not None:  # :/ = from the top of the repository
            return commit
    return None


def files(run_dir: Path) -> list[tuple[Path, int]]:
    return sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file())


def without_throughput(metrics: Any) -> Any:
    if isinstance(metrics, dict):
        return {k: without_throughput(v) for k, v in metrics.items() if k != "images_per_s"}
    if isinstance(metrics, list):
        return [without_throughput(v) for v in metrics]
    return metrics


def text(out: subprocess.CompletedProcess) -> str:
    return " ".join((out.stdout + out.stderr).split())  # undo the console's line wrapping


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny train-mtl run, launched as users do; its cwd is the parent of the run directory."""
    work = tmp_path_factory.mktemp("work")
    out = run_cli("mtlssl", "train-mtl", *TINY, *TINY_TRAIN, "resume=auto", "hydra.run.dir=run", cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    return work / "run"


@pytest.fixture(scope="module")
def reproduced(original: Path) -> tuple[subprocess.CompletedProcess, list[tuple[Path, int]], Path]:
    before = files(original)
    out = run_cli("mtlssl", "reproduce", "run", cwd=original.parent)
    new = [p for p in original.parent.iterdir() if p.name.startswith("run-reproduce-")]
    assert len(new) == 1, text(out)
    return out, before, new[0]


def test_reproduce_gives_identical_metrics_on_cpu(original: Path, reproduced: tuple) -> None:
    out, before, new_dir = reproduced
    assert out.returncode == 0, out.stderr[-3000:]
    # Every number, the per-epoch history included; only the measured throughput may differ.
    old_metrics = json.loads((original / "metrics.json").read_text())
    new_metrics = json.loads((new_dir / "metrics.json").read_text())
    assert without_throughput(new_metrics) == without_throughput(old_metrics)
    assert "metrics: original vs reproduction" in out.stdout and "test/shape/accuracy" in out.stdout
    assert "identical: all" in text(out)
    # The replay is a full Hydra run of the same overrides, less the run-management ones.
    overrides = yaml.safe_load((new_dir / ".hydra" / "overrides.yaml").read_text())
    assert overrides == [*TINY, *TINY_TRAIN]
    assert (new_dir / "provenance.json").is_file()
    assert files(original) == before  # nothing of the original changed, Hydra's bookkeeping included


def test_provenance_records_the_source_commit_and_the_launch(original: Path) -> None:
    record = json.loads((original / "provenance.json").read_text())
    assert record["commit"] == head_commit()
    assert isinstance(record["dirty"], bool) if record["commit"] else record["dirty"] is None
    assert record["cwd"] == str(original.parent) and "hydra.run.dir=run" in record["argv"]
    assert record["versions"]["mtlssl"] and record["versions"]["torch"]


def test_a_directory_that_is_no_run_exits_2(original: Path, tmp_path: Path) -> None:
    out = run_cli("mtlssl", "reproduce", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "is not a run directory" in text(out) and "Traceback" not in text(out)
    out = run_cli("mtlssl", "reproduce", str(original / "checkpoints"), cwd=tmp_path)
    assert out.returncode == 2 and f"it lies inside the run '{original}'" in text(out)
    assert list(tmp_path.iterdir()) == []


def test_out_must_be_a_new_directory(original: Path, tmp_path: Path) -> None:
    before, siblings = files(original), set(original.parent.iterdir())
    out = run_cli("mtlssl", "reproduce", str(original), "--out", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 2 and "already exists" in text(out)
    out = run_cli("mtlssl", "reproduce", str(original), "--out", str(original / "again"), cwd=tmp_path)
    assert out.returncode == 2 and "inside the original run" in text(out)
    assert list(tmp_path.iterdir()) == [] and files(original) == before and set(original.parent.iterdir()) == siblings


@pytest.mark.skipif(commit_with_head_configs() is None,
                    reason="needs a git checkout whose HEAD~1 or earlier has the current conf/")
def test_a_run_from_another_commit_replays_that_commits_configs(original: Path, tmp_path: Path) -> None:
    commit = commit_with_head_configs()
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    record = json.loads((copy / "provenance.json").read_text())
    (copy / "provenance.json").write_text(json.dumps({**record, "commit": commit, "dirty": False}))
    out = run_cli("mtlssl", "reproduce", str(copy), "--out", str(tmp_path / "new"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"the run was made at commit {commit[:12]}" in text(out)
    assert f"using the configs at commit {commit[:12]}" in text(out)
    hydra_cfg = yaml.safe_load((tmp_path / "new" / ".hydra" / "hydra.yaml").read_text())["hydra"]
    main = next(s["path"] for s in hydra_cfg["runtime"]["config_sources"] if s["provider"] == "main")
    assert main != str(config_dir()) and main.endswith("/conf") and "mtlssl-reproduce-" in main
    assert "identical: all" in text(out)


# ---- the parts, in-process --------------------------------------------------------------------------------


@pytest.mark.skipif(git("rev-parse", "HEAD~1") is None, reason="needs a git checkout with history")
def test_the_configs_of_a_known_commit_are_extracted(tmp_path: Path) -> None:
    commit = git("rev-parse", "HEAD~1")
    configs, notes = rp.choose_configs({"commit": commit, "dirty": False}, {"commit": "0" * 40, "dirty": False},
                                       tmp_path)
    assert configs is not None and configs.is_relative_to(tmp_path)
    assert (configs / "train_mtl.yaml").read_text().strip() == git("show", f"{commit}:conf/train_mtl.yaml")
    assert any(f"made at commit {commit[:12]}" in n for n in notes)


def test_an_unknown_or_missing_commit_falls_back_to_the_current_configs(tmp_path: Path) -> None:
    now = {"commit": head_commit(), "dirty": False}
    configs, notes = rp.choose_configs({"commit": "f" * 40, "dirty": True}, now, tmp_path)
    assert configs is None and list(tmp_path.iterdir()) == []
    assert any("modified tree" in n for n in notes)
    if now["commit"]:
        assert any("is not in this repository" in n for n in notes)
    assert rp.choose_configs({"commit": None}, now, tmp_path)[0] is None
    configs, notes = rp.choose_configs(None, now, tmp_path)
    assert configs is None and "no provenance.json" in notes[0]
    assert rp.choose_configs({"commit": "a" * 40, "dirty": False}, {"commit": "a" * 40, "dirty": False},
                             tmp_path) == (None, [])


def test_run_management_overrides_are_not_replayed() -> None:
    overrides = ["resume=true", "sweep_name=x", "hydra.run.dir=y", "+hydra.job.chdir=true", "hydra/launcher=joblib",
                 "seed=3", "weighting=uncertainty", "tasks=[shape,colour]", "hydrated=1",
                 # a group placed under hydra would be built by Hydra itself (a callback), before any check of mtlssl
                 "+optim@hydra.callbacks.x=sgd", "+data@_global_.hydra.callbacks.y=shapes", "launcher@z=joblib",
                 "augmentation@pretrain.augmentation=weak"]
    assert rp.replayable(overrides) == ["seed=3", "weighting=uncertainty", "tasks=[shape,colour]", "hydrated=1",
                                        "augmentation@pretrain.augmentation=weak"]


# ---- a run directory is data: replaying it never runs code that is not mtlssl's ---------------------------


def hostile(marker: Path) -> str:
    return f"{{_target_:torch.save,_args_:[[1],'{marker}']}}"


@pytest.mark.parametrize("overrides,message", [
    (["+data.extra={payload}"], "data.extra._target_=torch.save is not allowed"),
    (["optim._target_=torch.save", "+optim._args_=[[1],'{marker}']"], "optim._target_=torch.save is not allowed"),
    (["+evil={payload}", "+augmentation.extra=${{evil}}"], "augmentation.extra._target_=torch.save"),
    (["optim._target_=torch.hub.load"], "optim._target_=torch.hub.load is not allowed"),
], ids=["nested", "partial_with_args", "interpolated_node", "torch.hub.load"])
def test_a_run_whose_overrides_carry_a_hostile_target_is_refused_before_anything(
        overrides: list[str], message: str, original: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    recorded = yaml.safe_load((copy / ".hydra" / "overrides.yaml").read_text())
    added = [o.format(payload=hostile(marker), marker=marker) for o in overrides]
    (copy / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*recorded, *added]))
    out = run_cli("mtlssl", "reproduce", str(copy), "--out", str(tmp_path / "new"), cwd=tmp_path)
    assert out.returncode == 2, text(out)[-2000:]
    assert message in text(out) and f"(in the replay of '{copy}')" in text(out) and "Traceback" not in text(out)
    assert not marker.exists() and not (tmp_path / "new").exists()


def test_hydra_callbacks_of_a_replay_are_checked_too(tmp_path: Path) -> None:
    run = rp.RecordedRun(path=tmp_path, stage="train-mtl", config_name="train_mtl",
                         overrides=[f"+hydra.callbacks.x={hostile(tmp_path / 'pwned')}"], extra_config_dir=None,
                         provenance=None)  # past replayable(), which drops it: the check does not rely on that
    with pytest.raises(UserError, match=r"hydra.callbacks.x._target_=torch.save is not allowed \(in the replay of .*"
                                        r"hydra.callbacks may only name mtlssl.engine.run_dir_guard.RunDirGuard"):
        rp.check_replay(run, None, None)
    rp.check_replay(dataclasses.replace(run, overrides=["weighting=pcgrad", "optim=sgd"]), None, None)


def test_a_config_dir_is_never_taken_from_the_run_directory(tmp_path: Path) -> None:
    mine = tmp_path / "my_conf"
    mine.mkdir()
    run = rp.RecordedRun(path=tmp_path / "run", stage="train-mtl", config_name="train_mtl", overrides=[],
                         extra_config_dir=str(mine), provenance=None)
    with pytest.raises(UserError, match=rf"was made with --config-dir={mine}. A config directory can run code, so "
                                        rf"reproduce never takes one from a run directory: if you trust it, run "
                                        rf"mtlssl reproduce {tmp_path / 'run'} --config-dir {mine}"):
        rp.trusted_config_dir(run, None)
    assert rp.trusted_config_dir(run, mine) == (str(mine), [])
    assert f"--config-dir={mine}" in rp.command(run, None, tmp_path / "new", str(mine))
    assert "--config-dir" not in " ".join(rp.command(run, None, tmp_path / "new", None))
    with pytest.raises(UserError, match="is not a directory"):
        rp.trusted_config_dir(run, tmp_path / "nope")


def test_the_new_run_directory(tmp_path: Path) -> None:
    sweep = tmp_path / "sweeps" / "s1"
    job = sweep / "weighting=equal" / "seed=0"
    job.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")
    run = rp.RecordedRun(path=job, stage="train-mtl", config_name="train_mtl", overrides=[], extra_config_dir=None,
                         provenance=None)
    new = rp.new_run_dir(run, None)  # beside the sweep: summarize of the sweep must not count it as a seed
    assert new.parents[2] == sweep.parent and new.relative_to(new.parents[1]) == Path("weighting=equal/seed=0")
    single = dataclasses.replace(run, path=tmp_path / "outputs" / "run")
    assert rp.new_run_dir(single, None).parent == tmp_path / "outputs"
    assert rp.hydra_value("/a/b-c_1.x") == "/a/b-c_1.x"
    assert rp.hydra_value("/a b/w=x,y'z") == "'/a b/w=x,y\\'z'"


def test_the_comparison() -> None:
    metrics = {"stage": "pipeline", "config": {"seed": 0}, "history": [{"loss": 1.0}], "flag": True,
               "pretrained": {"test/shape/accuracy": 0.5, "images_per_s": 900.0, "curve": [1, 2]}, "best_epoch": 3,
               "test/size/mae": None}
    flat = rp.flatten(metrics)
    assert flat == {"pretrained/test/shape/accuracy": 0.5, "best_epoch": 3, "test/size/mae": None}
    assert rp.verdict(flat, dict(flat)).startswith("identical: all 3")
    other = {**flat, "pretrained/test/shape/accuracy": 0.25, "extra": 1.0}
    assert rp.verdict(flat, other) == ("different: 1 of 3 shared metrics differ; max abs difference 0.25 "
                                       "(pretrained/test/shape/accuracy); 1 metric(s) in only one of them")
