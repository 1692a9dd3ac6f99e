"""Sweeps that scale out: the launcher presets (joblib, submitit) and the Optuna hparams_search presets, run
as users run them (console-script subprocesses at tiny budgets), plus the objective a stage returns."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from mtlssl.config import config_dir
from mtlssl.errors import UserError
from mtlssl.stages._common import objective_value, run_stage
from tests.conftest import TINY, TINY_TRAIN, tiny
from tests.test_cli import run_cli

STAGES = ("pretrain", "train_mtl", "eval", "pipeline")


def needs(plugin: str) -> None:
    pytest.importorskip(f"hydra_plugins.{plugin}", reason=f"{plugin} is not installed (pip install 'mtlssl[test]')")


def jobs(sweep: Path) -> list[Path]:
    """The finished job directories of a sweep (each holds a metrics.json)."""
    return sorted(p.parent for p in sweep.rglob("metrics.json"))


def overrides(job: Path) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra/overrides.yaml").read_text()))


# --- the objective a stage's main returns -------------------------------------------------------------------


def hydra_config(name: str, *extra: str, mode: str = "MULTIRUN") -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=name, overrides=list(extra), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = mode
    return cfg


def fake_run(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    return {"val/loss": 0.25, "val/shape/accuracy": 0.5, "test/loss": 0.3, "best_epoch": 2}


@pytest.fixture
def stage_cfg(tmp_path: Path) -> Iterator[Callable[..., DictConfig]]:
    """A train_mtl config with overrides, set as the current Hydra config (run_stage reads its mode and dir)."""
    before = HydraConfig.instance().cfg

    def make(*extra: str, mode: str = "MULTIRUN") -> DictConfig:
        cfg = hydra_config("train_mtl", *extra, mode=mode)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path)
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = before


def test_run_stage_returns_the_configured_objective(stage_cfg: Callable[..., DictConfig]) -> None:
    assert run_stage(fake_run, stage_cfg()) is None  # objective: null
    assert run_stage(fake_run, stage_cfg("objective=val/loss")) == 0.25
    assert run_stage(fake_run, stage_cfg("objective=val/shape/accuracy")) == 0.5


def test_a_missing_objective_is_a_user_error_naming_the_metrics(stage_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(UserError, match="objective=val/nope is not a metric") as err:
        run_stage(fake_run, stage_cfg("objective=val/nope"))  # in a sweep: the exception fails this job only
    assert "best_epoch, test/loss, val/loss, val/shape/accuracy" in str(err.value)
    with pytest.raises(SystemExit) as done:  # a single run: one message, exit status 2
        run_stage(fake_run, stage_cfg("objective=val/nope", mode="RUN"))
    assert done.value.code == 2


def test_a_test_metric_objective_is_refused_before_training(stage_cfg: Callable[..., DictConfig]) -> None:
    def must_not_run(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
        raise AssertionError("trained with a test-split objective")

    with pytest.raises(UserError, match="test metric: tune on a validation metric.*val/loss"):
        run_stage(must_not_run, stage_cfg("objective=test/loss"))


def test_objective_value_nan_fails_the_job_and_ints_are_floats() -> None:
    assert objective_value({"a": 1.0}, None) is None
    assert objective_value({"best_epoch": 3}, "best_epoch") == 3.0
    with pytest.raises(UserError, match="NaN: the run diverged"):
        objective_value({"val/loss": math.nan}, "val/loss")


# --- the presets compose -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_launcher_presets_compose_for_every_stage(stage: str) -> None:
    needs("hydra_joblib_launcher")
    needs("hydra_submitit_launcher")
    expected = {"joblib": "JoblibLauncher", "slurm": "SlurmLauncher", "submitit_local": "LocalLauncher"}
    for preset, launcher in expected.items():
        cfg = hydra_config(stage, f"launcher={preset}")
        assert cfg.hydra.launcher._target_.endswith(launcher)
        sweep = OmegaConf.to_container(cfg.hydra.sweep)  # unresolved: the layout common.yaml sets is kept
        assert sweep == {"dir": "outputs/${hydra.job.name}/sweeps/${sweep_name}",
                         "subdir": "${mtlssl_sweep_subdir:${hydra:job.override_dirname},${seed}}"}
    plain = hydra_config(stage)
    assert plain.hydra.launcher._target_.endswith("BasicLauncher") and plain.objective is None


def test_slurm_preset_requeues_and_optuna_presets_set_validation_objectives() -> None:
    needs("hydra_submitit_launcher")
    needs("hydra_optuna_sweeper")
    slurm = hydra_config("train_mtl", "launcher=slurm").hydra.launcher
    assert slurm.max_num_timeout > 0 and slurm.signal_delay_s > 0 and slurm.partition is None
    both = hydra_config("train_mtl", "hparams_search=train_mtl_optuna", "launcher=joblib")
    assert both.hydra.launcher._target_.endswith("JoblibLauncher")
    assert both.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert both.objective == "val/loss" and both.hydra.sweeper.direction == "minimize"
    assert set(both.hydra.sweeper.params) == {"optim.lr", "optim.weight_decay", "encoder.lr_mult"}
    pre = hydra_config("pretrain", "hparams_search=pretrain_optuna")
    assert pre.objective == "knn/shape" and pre.hydra.sweeper.direction == "maximize"


def test_pretrain_returns_the_pretrain_preset_objective(tmp_path: Path) -> None:
    needs("hydra_optuna_sweeper")
    from mtlssl.stages import pretrain

    cfg = tiny("pretrain", "hparams_search=pretrain_optuna", "trainer.epochs=0")  # the initial encoder's kNN
    value = objective_value(pretrain.run(cfg, tmp_path), cfg.objective)
    assert value is not None and 0.0 <= value <= 1.0  # a kNN accuracy of the val queries


# --- launches ----------------------------------------------------------------------------------------------


def test_joblib_sweep_runs_two_jobs_in_parallel_in_the_default_layout(tmp_path: Path) -> None:
    needs("hydra_joblib_launcher")
    # No hydra.sweep.dir: the default outputs/<stage>/sweeps/<sweep_name>/ must resolve in multirun.
    out = run_cli("mtlssl", "train-mtl", "-m", "launcher=joblib", "hydra.launcher.n_jobs=2",
                  "weighting=equal,uncertainty", "sweep_name=js", *TINY, *TINY_TRAIN, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in out.stdout
    found = jobs(tmp_path / "outputs/train_mtl/sweeps/js")
    assert len(found) == 2 and len({p.parent for p in found}) == 2  # one readable directory per setting
    assert {overrides(p)["weighting"] for p in found} == {"equal", "uncertainty"}
    for job in found:
        assert job.name == "seed=0" and "launcher=" not in job.parent.name
        assert "test/shape/accuracy" in json.loads((job / "metrics.json").read_text())
        assert "epoch 1/1" in (job / "train_mtl.log").read_text()  # each worker logs to its own job's file


def test_optuna_sweep_runs_two_trials_and_reports_the_best(tmp_path: Path) -> None:
    needs("hydra_optuna_sweeper")
    # A database storage too: optuna 2.x (which the plugin pins) needs SQLAlchemy 1, as mtlssl[optuna] installs.
    out = run_cli("mtlssl", "train-mtl", "-m", "hparams_search=train_mtl_optuna", "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.storage=sqlite:///optuna.db", *TINY, *TINY_TRAIN, "hydra.sweep.dir=sweep",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = jobs(tmp_path / "sweep")
    assert len(found) == 2 and len({p.parent for p in found}) == 2  # sampled values name distinct directories
    trials = [(overrides(p), json.loads((p / "metrics.json").read_text())) for p in found]
    params = [{k: float(v) for k, v in o.items() if k in ("optim.lr", "optim.weight_decay", "encoder.lr_mult")}
              for o, _ in trials]
    assert all(len(p) == 3 and 1e-4 <= p["optim.lr"] <= 1e-2 for p in params) and params[0] != params[1]
    result = yaml.safe_load((tmp_path / "sweep/optimization_results.yaml").read_text())
    losses = [metrics["val/loss"] for _, metrics in trials]  # what each trial's main returned (objective)
    assert result["best_value"] == min(losses)
    best = [p for p, loss in zip(params, losses, strict=True) if loss == min(losses)]
    assert {k: float(v) for k, v in result["best_params"].items()} in best
    import optuna

    study = optuna.load_study(study_name="train_mtl", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t.value for t in study.trials) == sorted(losses)


def test_submitit_local_job_and_a_relaunch_resumes_from_last_pt(tmp_path: Path) -> None:
    needs("hydra_submitit_launcher")
    # A requeue reruns the same job in the same directory. Here the relaunch asks for one more epoch; keeping
    # trainer.epochs out of the directory name sends it to the first launch's job directory.
    same_dir = ("hydra.job.config.override_dirname.exclude_keys="
                "[seed,resume,device,sweep_name,objective,launcher,hparams_search,trainer.epochs]")
    train = [o for o in TINY_TRAIN if not o.startswith("trainer.epochs=")]
    base = ["mtlssl", "train-mtl", "-m", "launcher=submitit_local", *TINY, *train, "hydra.sweep.dir=sweep", same_dir]
    first = run_cli(*base, "trainer.epochs=1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    [job] = jobs(tmp_path / "sweep")
    assert len(json.loads((job / "metrics.json").read_text())["history"]) == 1
    assert list((tmp_path / "sweep/.submitit").glob("*/*_log.out"))  # submitit's own logs
    assert "Job completed successfully" in (job / "train_mtl.log").read_text()

    again = run_cli(*base, "trainer.epochs=2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert jobs(tmp_path / "sweep") == [job]
    history = json.loads((job / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]  # epoch 1 from the first launch, only epoch 2 trained now
    assert f"resuming from {job / 'checkpoints/last.pt'} at epoch 1" in (job / "train_mtl.log").read_text()
