"""The command line as users run it: subprocesses of the installed console scripts."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, TINY_TRAIN

BIN = Path(sys.executable).parent


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def test_umbrella_help_lists_the_stages(tmp_path: Path) -> None:
    out = run_cli("mtlssl", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for stage in ("pretrain", "train-mtl", "eval", "pipeline"):
        assert stage in out.stdout


def test_unknown_stage_exits_2(tmp_path: Path) -> None:
    out = run_cli("mtlssl", "nope", cwd=tmp_path)
    assert out.returncode == 2 and "unknown stage 'nope'" in out.stderr


def test_stage_help_and_cfg_job_work_from_any_directory(tmp_path: Path) -> None:
    for stage in ("pretrain", "train-mtl", "eval", "pipeline"):
        out = run_cli("mtlssl", stage, "--help", cwd=tmp_path)
        assert out.returncode == 0 and "== Configuration groups ==" in out.stdout, out.stderr
    out = run_cli("mtlssl-train-mtl", "--cfg", "job", "weighting=uncertainty", cwd=tmp_path)
    assert out.returncode == 0 and "Uncertainty" in out.stdout


def test_multirun_sweep_runs_two_jobs_in_readable_directories(tmp_path: Path) -> None:
    out = run_cli("mtlssl", "train-mtl", "-m", "weighting=equal,uncertainty", *TINY, *TINY_TRAIN,
                  "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    results = sorted((tmp_path / "sweep").glob("*/seed=0/metrics.json"))
    assert len(results) == 2
    assert all("test/shape/accuracy" in json.loads(p.read_text()) for p in results)
    # <overrides without seed>/seed=<n>: the same setting at other seeds lands beside it; this long override
    # list is cut to MAX_DIRNAME characters with a hash that keeps the two settings apart.
    names = {p.parent.parent.name for p in results}
    assert len(names) == 2 and all(n.startswith("data.cache_dir=null,") and len(n) <= 120 for n in names)
    methods = {(p.parent / ".hydra/overrides.yaml").read_text().split("weighting=")[1].split()[0] for p in results}
    assert methods == {"equal", "uncertainty"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["eval", "ckpt=missing.pt"], "checkpoint 'missing.pt' does not exist"),
        (["train-mtl", "tasks=[shape,nope]"], "unknown task 'nope'"),
        (["train-mtl", "encoder.init={pretrained}", "encoder.arch.width=6"], "encoder mismatch"),
        (["train-mtl", "hydra.run.dir={pretrained}"], "is a pretrain checkpoint, but a mtl checkpoint is needed"),
        # a wrong type in an override: named before any training, not a traceback deep in the run
        (["train-mtl", "optim.lr=abc"], "optim.lr=abc: optim.lr needs a number (its default is 0.002)"),
        (["train-mtl", "trainer.epochs=abc"], "trainer.epochs=abc: trainer.epochs needs an integer (its default is"),
        (["pretrain", "trainer.deterministic=yes"], "trainer.deterministic needs true or false"),
        (["pipeline", "pretrain.trainer.epochs=2.5"], "pretrain.trainer.epochs needs an integer"),
        (["train-mtl", "+experiment=multimnist_mgda"], "write experiment=multimnist_mgda (no +)"),
        # a target that is not one of its group's builders, however harmless its prefix looks
        (["train-mtl", "optim._target_=torch.hub.load"],
         "optim._target_=torch.hub.load is not allowed: optim may only name mtlssl.engine.lars.LARS, "
         "torch.optim.AdamW, torch.optim.SGD"),
        (["pipeline", "train_mtl.optim._target_=torch.save"], "train_mtl.optim._target_=torch.save is not allowed"),
    ],
)
def test_user_errors_exit_2_with_one_clear_message(args: list[str], message: str, pretrained_run: Path,
                                                   tmp_path: Path) -> None:
    before = own_outputs(pretrained_run)
    stage, *rest = (a.format(pretrained=pretrained_run) for a in args)
    common = {"train-mtl": TINY, "pretrain": TINY}.get(stage, ["device=cpu"])
    out = run_cli("mtlssl", stage, *common, *rest, cwd=tmp_path)
    assert out.returncode == 2
    text = " ".join((out.stdout + out.stderr).split())  # undo the console's line wrapping
    assert message in text and "Traceback" not in text
    # mtlssl's outputs of an existing run are untouched, even when it was named as the run directory.
    assert own_outputs(pretrained_run) == before


def own_outputs(run_dir: Path) -> list[tuple[Path, int, bytes]]:
    """Every file in a run directory, .hydra/ included, with its mtime and bytes: a refused launch leaves them all
    as they were (mtlssl's run_dir_guard refuses before Hydra writes .hydra/)."""
    return sorted((p, p.stat().st_mtime_ns, p.read_bytes()) for p in run_dir.rglob("*") if p.is_file())


def test_a_failing_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    out = run_cli("mtlssl", "train-mtl", "-m", "trainer.monitor=val/nope,val/loss", *TINY, *TINY_TRAIN,
                  "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode != 0  # the sweep reports its failed job...
    finished = list((tmp_path / "sweep").glob("*/seed=0/metrics.json"))
    assert len(finished) == 1  # ...after running the others: the good job comes after the failing one
    assert "trainer.monitor=val/loss" in (finished[0].parent / ".hydra/overrides.yaml").read_text()
    logs = " ".join(p.read_text() for p in (tmp_path / "sweep").glob("*/seed=0/train_mtl.log"))
    assert "trainer.monitor=val/nope is not a validation metric" in logs


def test_a_preset_without_its_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtlssl import cli

    assert cli.missing_plugin(["launcher=joblib", "hparams_search=train_mtl_optuna", "launcher=null"]) is None
    installed = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name.endswith("submitit_launcher") else installed(name))
    assert cli.missing_plugin(["launcher=joblib"]) is None
    assert 'pip install "mtlssl[launchers]"' in cli.missing_plugin(["seed=1", "+launcher=slurm"])


def test_python_dash_m_mtlssl_is_the_mtlssl_command(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mtlssl", "train-mtl", "--cfg", "job", "experiment=multimnist_mgda"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mtlssl.weighting.mgda.MGDA" in out.stdout and "mtlssl.data.multimnist.multimnist" in out.stdout
