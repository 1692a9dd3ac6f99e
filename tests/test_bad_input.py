"""Every bad input ends in one clear message naming the problem and the fix (a UserError; exit status 2 from
the command line) and overwrites nothing: bad checkpoints, bad hyper-parameters, a run directory that is not
writable or belongs to another run."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mtlssl.config import config_dir, instantiate
from mtlssl.engine.optim import build_optimizer, param_groups
from mtlssl.engine.run_dir_guard import RunDirGuard
from mtlssl.engine.runtime import Runtime
from mtlssl.engine.state import read_checkpoint
from mtlssl.errors import UserError
from mtlssl.stages import evaluate, pretrain, train_mtl
from tests.conftest import TINY, TINY_TRAIN, tiny
from tests.test_cli import own_outputs, run_cli

RUN = {"pretrain": pretrain.run, "train_mtl": train_mtl.run, "eval": evaluate.run}


@pytest.fixture(scope="module")
def mtl_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny train-mtl run (one epoch, all five tasks, linear heads)."""
    run_dir = tmp_path_factory.mktemp("mtl")
    train_mtl.run(tiny("train_mtl"), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the module: each case builds the same tiny data, generated once (not what is tested)."""
    return tmp_path_factory.mktemp("data_cache")


def stage_config(stage: str, overrides: list[str], data_cache: Path) -> DictConfig:
    cache = [f"data.cache_dir={data_cache}"] if stage != "eval" else []  # eval reads the checkpoint's data
    return tiny(stage, *overrides, *cache)


@pytest.fixture
def paths(pretrained_run: Path, mtl_run: Path, tmp_path: Path) -> dict[str, Path]:
    """The inputs the cases name: finished runs, a truncated checkpoint, a file that is not one, an empty run."""
    truncated = tmp_path / "truncated.pt"
    last = (pretrained_run / "checkpoints" / "last.pt").read_bytes()
    truncated.write_bytes(last[: len(last) // 2])
    garbage = tmp_path / "notes.pt"
    garbage.write_text("not a checkpoint\n")
    (tmp_path / "empty_run" / "checkpoints").mkdir(parents=True)
    return {"pretrained": pretrained_run, "mtl": mtl_run, "truncated": truncated, "garbage": garbage,
            "empty_run": tmp_path / "empty_run", "missing": tmp_path / "no" / "such.pt"}


# --- the cases, through a stage in process: stage, overrides ({name}: a path of `paths`), the message's phrases --

STAGE_CASES = [
    # checkpoints: missing, unreadable, truncated, of the wrong kind, not fitting; an unknown task
    ("train_mtl", ["encoder.init={missing}"], ["does not exist", "give the path of a run directory or a .pt file"]),
    ("eval", ["ckpt={missing}"], ["does not exist", "give the path of a run directory or a .pt file"]),
    ("eval", ["ckpt={empty_run}"], ["holds no checkpoints/best.pt or last.pt", "point ckpt at a finished run"]),
    ("eval", ["ckpt={garbage}"], ["cannot read checkpoint", "not a PyTorch file", "point ckpt at an intact"]),
    ("eval", ["ckpt={truncated}"], ["cannot read checkpoint", "truncated", "point ckpt at an intact"]),
    ("train_mtl", ["encoder.init={truncated}"], ["cannot read checkpoint", "truncated", "point encoder.init at"]),
    ("train_mtl", ["encoder.init={pretrained}", "encoder.arch.width=6"],
     ["encoder mismatch", "choose the matching encoder"]),
    ("train_mtl", ["tasks=[shape,nope]"], ["unknown task 'nope'", "it provides: shape", "tasks=[shape]"]),
    # hyper-parameters: one of each kind end to end (the rest below, where they are built)
    ("train_mtl", ["optim.lr=0"], ["optim.lr must be > 0 (got 0", "optim.lr=1e-3"]),
    ("pretrain", ["ssl.temperature=0"], ["ssl.temperature must be > 0", "ssl.temperature=0.5"]),
    ("train_mtl", ["weighting=static", "weighting.weights=[1,2]"],
     ["weighting.weights has 2 values for 5 tasks", "weighting.weights=[1,1,1,1,1]"]),
    ("pretrain", ["augmentation.flip_p=1.5"], ["augmentation.flip_p must be a probability in [0, 1], got 1.5",
                                               "set augmentation.flip_p to such a value"]),
    ("train_mtl", ["heads=mlp", "heads.dropout=1.5"], ["heads.dropout in [0, 1)", "heads.dropout=0.1"]),
    ("train_mtl", ["trainer.grad_clip=-1"], ["trainer.grad_clip must be > 0, or null", "trainer.grad_clip=1.0"]),
    # loop settings that would fail late: no epoch (no best.pt), a zero batch size, a zero kNN k
    ("train_mtl", ["trainer.epochs=0"], ["trainer.epochs must be >= 1 (got 0)", "trainer.epochs=10"]),
    ("pretrain", ["trainer.batch_size=0"], ["trainer.batch_size must be >= 1 (got 0)"]),
    ("train_mtl", ["trainer.log_every=0"], ["trainer.log_every must be >= 1 (got 0)"]),
    ("pretrain", ["monitor.k=0"], ["kNN needs k >= 1 and temperature > 0 (got k=0", "monitor.k"]),
    ("eval", ["ckpt={pretrained}", "batch_size=0"], ["batch_size must be >= 1 (got 0)"]),
    ("train_mtl", ["trainer.nonfinite=ignore"], ["trainer.nonfinite=ignore is not one of raise, skip"]),
    ("train_mtl", ["trainer.checkpoint_every_steps=-1"], ["trainer.checkpoint_every_steps must be >= 0"]),
]


def case_id(value: object) -> str:
    return " ".join(value) if isinstance(value, list) else str(value)


@pytest.mark.parametrize("stage,overrides,phrases", STAGE_CASES, ids=case_id)
def test_bad_input_is_one_user_error_naming_problem_and_fix(stage: str, overrides: list[str], phrases: list[str],
                                                            paths: dict[str, Path], data_cache: Path,
                                                            tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(UserError) as err:
        RUN[stage](stage_config(stage, [o.format(**paths) for o in overrides], data_cache), run_dir)
    for phrase in phrases:
        assert phrase in str(err.value), str(err.value)
    assert not list(run_dir.rglob("*.pt")) and not (run_dir / "metrics.json").exists()  # nothing of a run


# --- the other hyper-parameters, where the stage builds them from the composed config (no data needed) --------


def build(cfg: DictConfig, key: str) -> object:
    """What a stage builds from ``cfg[key]``, as it builds it."""
    if key == "weighting":
        return train_mtl.build_weighting(cfg, 5, Runtime.create("cpu", "32", False))
    if key in ("optim", "sched"):
        optimizer = build_optimizer(cfg.optim, param_groups([(nn.Linear(2, 2), 1.0)], cfg.optim.lr,
                                                            cfg.optim.weight_decay))
        return instantiate(cfg.sched, "sched")(optimizer, total_steps=10, steps_per_epoch=5)
    kwargs = {"ssl": {"in_dim": 4}}.get(key, {})
    built = instantiate(cfg[key], key, **kwargs)
    return built(in_dim=4, out_dim=2) if key == "heads" else built


BUILD_CASES = [
    *[("pretrain", "augmentation", [f"augmentation.{p}={v}"],
       [f"augmentation.{p} must be a probability in [0, 1]", f"set augmentation.{p} to such a value"])
      for p, v in (("jitter_p", -0.1), ("grayscale_p", 2), ("blur_p", 1.01))],
    ("pretrain", "ssl", ["ssl.temperature=-0.5"], ["ssl.temperature must be > 0", "ssl.temperature=0.5"]),
    ("pretrain", "ssl", ["ssl.temperature=nan"], ["ssl.temperature must be > 0", "ssl.temperature=0.5"]),
    ("train_mtl", "heads", ["heads=mlp", "heads.hidden_dim=0"], ["heads.hidden_dim >= 1", "heads.hidden_dim=256"]),
    ("train_mtl", "weighting", ["weighting=static", "weighting.weights=[1,1,-1,1,1]"],
     ["weighting.weights must be finite and >= 0", "weighting.weights=[1,1,1,1,1]"]),
    ("train_mtl", "weighting", ["weighting=dwa", "weighting.temperature=0"],
     ["weighting.temperature must be > 0", "uses 2"]),
    ("train_mtl", "weighting", ["weighting=graddrop", "weighting.leak=1.5"],
     ["weighting.leak must be in [0, 1]", "weighting.leak=0"]),
    ("train_mtl", "weighting", ["weighting=db_mtl", "weighting.beta=1"],
     ["weighting.beta", "must be in [0, 1)", "weighting.beta=0.9"]),
    ("train_mtl", "optim", ["optim.lr=nan"], ["optim.lr must be > 0 (got nan", "optim.lr=1e-3"]),
    ("train_mtl", "optim", ["optim=lars", "optim.momentum=1.5"], ["optim.momentum must be in [0, 1)", "momentum=0.9"]),
    ("train_mtl", "optim", ["optim.weight_decay=-1"], ["optim.weight_decay must be >= 0", "use 0 for no decay"]),
    ("train_mtl", "optim", ["optim=sgd", "optim.momentum=-1"], ["optim.momentum must be in [0, 1)", "momentum=0.9"]),
    ("train_mtl", "optim", ["optim=adamw", "optim.betas=[1.5,0.999]"],
     ["optim.betas must be two values in [0, 1)", "optim.betas=[0.9,0.999]"]),
    ("train_mtl", "optim", ["optim=sgd", "optim.nesterov=true", "optim.momentum=0"],
     ["optim.nesterov=true needs optim.momentum > 0"]),
    ("train_mtl", "optim", ["optim=sgd", "+optim.dampening=0.5", "optim.nesterov=true"],
     ["optim (torch.optim.SGD): Nesterov", "fix that optim.* setting"]),
    ("train_mtl", "optim", ["optim=adamw", "+optim.foo=1"], ["optim (torch.optim.AdamW)", "foo", "fix that optim.*"]),
    ("train_mtl", "sched", ["sched.final_lr_ratio=2"], ["sched.final_lr_ratio must be in [0, 1]",
                                                        "sched.final_lr_ratio=0"]),
    ("train_mtl", "sched", ["sched=constant", "sched.warmup_epochs=-1"], ["sched.warmup_epochs must be >= 0", "use 0"]),
]


@pytest.mark.parametrize("stage,key,overrides,phrases", BUILD_CASES, ids=case_id)
def test_bad_hyper_parameter_is_a_user_error_naming_key_and_fix(stage: str, key: str, overrides: list[str],
                                                                phrases: list[str]) -> None:
    with pytest.raises(UserError) as err:
        build(tiny(stage, *overrides), key)
    for phrase in phrases:
        assert phrase in str(err.value), str(err.value)


def test_every_shipped_optimizer_and_the_defaults_build() -> None:
    for name in ("sgd", "adamw", "lars"):
        build(tiny("train_mtl", f"optim={name}"), "optim")


def test_a_negative_encoder_rate_and_a_wrong_kind_name_the_fix(pretrained_run: Path) -> None:
    with pytest.raises(UserError, match=r"encoder.lr_mult must be >= 0 \(got -1\); .*encoder.mode=frozen"):
        param_groups([(nn.Linear(2, 2), 1.0), (nn.Linear(2, 2), -1)], lr=0.1, weight_decay=0.0)
    with pytest.raises(UserError, match="is a pretrain checkpoint, but a mtl checkpoint is needed here; give a run "
                                        "directory or .pt written by mtlssl train-mtl"):
        read_checkpoint(pretrained_run, "baselines", kinds=("mtl",))


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux's /proc")
def test_a_checkpoint_that_cannot_be_read_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"cannot read checkpoint '/proc/self/mem' \(OSError: .*point ckpt at"):
        evaluate.run(tiny("eval", "ckpt=/proc/self/mem"), tmp_path)  # reading it fails (EIO), even as root


# --- relaunching into an existing run: refused, and the run is left byte for byte as it was -----------------

# (stage, run to copy, overrides, phrases). A relaunch names each setting it cannot apply to the run it continues
# (tests/engine/test_relaunch.py has the rest); here, that no refusal writes anything.
CANNOT_APPLY = "that this launch continues, and continuing it cannot apply"
RELAUNCHES = [
    ("train_mtl", "pretrained", [], ["is a pretrain checkpoint, but a mtl checkpoint is needed", "hydra.run.dir"]),
    ("pretrain", "pretrained", ["resume=false"], ["resume=false would overwrite it", "resume=auto"]),
    ("train_mtl", "mtl", ["resume=false"], ["resume=false would overwrite it", "resume=auto"]),
    ("train_mtl", "truncated_last", [], ["resume: cannot read checkpoint", "move checkpoints/last.pt aside"]),
    ("train_mtl", "mtl", ["encoder.arch.width=6"], [CANNOT_APPLY, "encoder.arch.width: 4 in the run, 6 asked",
                                                    "hydra.run.dir=<new dir>"]),
    ("pretrain", "pretrained", ["encoder.arch.width=6"], [CANNOT_APPLY, "encoder.arch.width: 4 in the run, 6 asked"]),
    ("train_mtl", "mtl", ["tasks=[shape,colour]"], ["tasks: null in the run, [shape,colour] asked"]),
    ("train_mtl", "mtl", ["heads=mlp"], ["heads._target_: mtlssl.models.heads.linear.linear in the run, "
                                         "mtlssl.models.heads.mlp.mlp asked"]),
    ("train_mtl", "mtl", ["optim.lr=-1"], ["optim.lr: 0.002 in the run, -1 asked"]),
    ("train_mtl", "mtl", ["trainer.batch_size=0"], ["trainer.batch_size: 32 in the run, 0 asked"]),
    ("train_mtl", "mtl", ["weighting=uncertainty"], ["weighting._target_: mtlssl.weighting.equal.Equal in the run, "
                                                     "mtlssl.weighting.uncertainty.Uncertainty asked"]),
    ("train_mtl", "mtl", ["optim=sgd"], ["optim._target_: torch.optim.AdamW in the run, torch.optim.SGD asked"]),
]


@pytest.mark.parametrize("stage,source,overrides,phrases", RELAUNCHES, ids=case_id)
def test_a_refused_relaunch_leaves_the_run_as_it_was(stage: str, source: str, overrides: list[str],
                                                     phrases: list[str], paths: dict[str, Path],
                                                     data_cache: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "existing"
    shutil.copytree(paths["mtl" if source == "truncated_last" else source], run_dir)
    if source == "truncated_last":
        last = run_dir / "checkpoints" / "last.pt"
        last.write_bytes(last.read_bytes()[:1000])
    before = own_outputs(run_dir)
    with pytest.raises(UserError) as err:
        RUN[stage](stage_config(stage, [*overrides, "trainer.epochs=2"], data_cache), run_dir)  # a real resume
    for phrase in phrases:
        assert phrase in str(err.value), str(err.value)
    assert own_outputs(run_dir) == before


# --- the run-directory guard (a Hydra callback: it runs before Hydra writes .hydra/) --------------------------


@pytest.fixture
def hydra_cfg() -> Iterator[Callable[..., DictConfig]]:
    """A stage's config with its hydra node, as Hydra hands it to callbacks; HydraConfig is restored after."""
    before = HydraConfig.instance().cfg

    def make(stage: str, *overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=stage, overrides=list(overrides), return_hydra_config=True)

    yield make
    HydraConfig.instance().cfg = before


def record_launch(run_dir: Path, stage: str, launch: int = 1) -> None:
    """The .hydra/ files Hydra writes at a launch (the guard reads only the job name)."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"name": stage}}}))
    (run_dir / ".hydra" / "config.yaml").write_text(f"seed: {launch}\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text(f"- seed={launch}\n")


def launch(cfg: DictConfig) -> None:
    """The guard's part of one launch: its start, then (the job done) its end, which releases the directory."""
    guard = RunDirGuard()
    guard.on_run_start(cfg)
    guard.on_run_end(cfg, None, JobReturn())


def refused(hook: Callable[[], None], capsys: pytest.CaptureFixture[str]) -> str:
    """The one message a refusal prints; it must exit with status 2."""
    with pytest.raises(SystemExit) as done:
        hook()
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_guard_refuses_another_stages_run_before_writing(hydra_cfg: Callable[..., DictConfig], pretrained_run: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    by_record, by_checkpoint = tmp_path / "by_record", tmp_path / "by_checkpoint"
    shutil.copytree(pretrained_run, by_record)
    shutil.copytree(pretrained_run, by_checkpoint)
    record_launch(by_record, "pretrain")
    for run_dir, stage, phrase in (
        (by_record, "train_mtl", "holds a pretrain run (its .hydra/hydra.yaml names the job pretrain); train-mtl"),
        (by_record, "eval", "holds a pretrain run (its .hydra/hydra.yaml names the job pretrain); eval"),
        (by_checkpoint, "train_mtl", "its checkpoints/last.pt is a pretrain checkpoint, but a mtl checkpoint is "),
        (by_checkpoint, "pipeline", "holds a pretrain run (its checkpoints/last.pt is a pretrain checkpoint); "),
    ):
        before = own_outputs(run_dir)
        cfg = hydra_cfg(stage, f"hydra.run.dir={run_dir}")
        err = refused(lambda cfg=cfg: RunDirGuard().on_run_start(cfg), capsys)
        assert phrase in err and "Choose a new directory with hydra.run.dir=<dir>" in err
        assert err.startswith(f"mtlssl {stage.replace('_', '-')}: error: run directory '{run_dir}'")
        assert own_outputs(run_dir) == before


def test_guard_refuses_resume_false_over_a_run_or_a_pipelines_stage(
        hydra_cfg: Callable[..., DictConfig], pretrained_run: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, pipeline_dir = tmp_path / "run", tmp_path / "pipeline"
    shutil.copytree(pretrained_run, run_dir)
    shutil.copytree(pretrained_run, pipeline_dir / "pretrain")
    record_launch(pipeline_dir, "pipeline")
    for stage, where, held in (("pretrain", run_dir, "checkpoints/last.pt"),
                               ("pipeline", pipeline_dir, "pretrain/checkpoints/last.pt")):
        before = own_outputs(where)
        cfg = hydra_cfg(stage, f"hydra.run.dir={where}", "resume=false")
        err = refused(lambda cfg=cfg: RunDirGuard().on_run_start(cfg), capsys)
        assert f"already holds {held}; resume=false would overwrite it. Use resume=auto" in err
        assert own_outputs(where) == before


def test_guard_refuses_a_directory_it_cannot_write(hydra_cfg: Callable[..., DictConfig], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("a file, not a folder")
    for target in (tmp_path / "afile" / "run", tmp_path / "afile"):
        err = refused(lambda t=target: RunDirGuard().on_run_start(hydra_cfg("train_mtl", f"hydra.run.dir={t}")),
                      capsys)
        assert f"{target} is not writable (" in err and "choose another with hydra.run.dir=<dir>" in err
    sweep = tmp_path / "afile" / "sweep"
    err = refused(lambda: RunDirGuard().on_multirun_start(hydra_cfg("train_mtl", f"hydra.sweep.dir={sweep}")), capsys)
    assert f"{sweep} is not writable (Not a directory); choose another with hydra.sweep.dir=<dir>" in err
    assert (tmp_path / "afile").read_text() == "a file, not a folder"


def test_guard_keeps_the_previous_launches_hydra_records(hydra_cfg: Callable[..., DictConfig], mtl_run: Path,
                                                         tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(mtl_run, run_dir)
    record_launch(run_dir, "train_mtl")
    first = {p.name: p.read_bytes() for p in (run_dir / ".hydra").glob("*.yaml")}
    launch(hydra_cfg("train_mtl", f"hydra.run.dir={run_dir}"))  # a resume: allowed
    kept = run_dir / ".hydra" / "previous" / "1"
    assert {p.name: p.read_bytes() for p in kept.glob("*.yaml")} == first
    record_launch(run_dir, "train_mtl", launch=2)  # Hydra writes the second launch's; a third keeps them too
    second = {p.name: p.read_bytes() for p in (run_dir / ".hydra").glob("*.yaml")}
    launch(hydra_cfg("train_mtl", f"hydra.run.dir={run_dir}"))
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra" / "previous" / "2").glob("*.yaml")} == second
    assert {p.name: p.read_bytes() for p in kept.glob("*.yaml")} == first


def test_guard_resolves_the_default_run_dir_as_hydra_will(hydra_cfg: Callable[..., DictConfig], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = hydra_cfg("train_mtl")  # outputs/${hydra:job.name}/${now:...}/${now:...}: needs HydraConfig, cached times
    guard = RunDirGuard()
    guard.on_run_start(cfg)
    created = [p for p in (tmp_path / "outputs" / "train_mtl").glob("*/*") if p.is_dir()]
    assert len(created) == 1 and [p.name for p in created[0].iterdir()] == [".lock"]  # made, probed and locked
    guard.on_run_end(cfg, None, JobReturn())
    assert not any(created[0].iterdir())  # the run over, nothing of the guard's is left
    assert (tmp_path / str(OmegaConf.select(cfg, "hydra.run.dir"))).resolve() == created[0].resolve()


def test_guard_lets_a_fresh_sweep_start(hydra_cfg: Callable[..., DictConfig], tmp_path: Path) -> None:
    guard, cfg = RunDirGuard(), hydra_cfg("train_mtl", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    guard.on_multirun_start(cfg)
    assert (tmp_path / "sweep").is_dir()
    guard.on_multirun_end(cfg)
    assert not any((tmp_path / "sweep").iterdir())


# --- from the command line: exit status 2, one message, no traceback, nothing overwritten ----------------------


def one_message(out, phrase: str) -> None:
    assert out.returncode == 2, out.stderr[-2000:]
    text = " ".join((out.stdout + out.stderr).split())  # undo the console's line wrapping
    assert text.count(phrase) == 1 and "Traceback" not in text, text[-2000:]


def test_cli_refuses_an_unwritable_run_dir(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    out = run_cli("mtlssl", "train-mtl", *TINY, "hydra.run.dir=afile/run", cwd=tmp_path)
    one_message(out, "afile/run is not writable (Not a directory); choose another with hydra.run.dir=<dir>")


def test_cli_leaves_another_stages_run_and_its_hydra_records_untouched(pretrained_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "pretrain_run"
    shutil.copytree(pretrained_run, run_dir)
    record_launch(run_dir, "pretrain")
    before = own_outputs(run_dir)
    out = run_cli("mtlssl", "train-mtl", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_message(out, "holds a pretrain run")
    assert own_outputs(run_dir) == before


def test_cli_refuses_resume_false_over_a_run(pretrained_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "pretrain_run"
    shutil.copytree(pretrained_run, run_dir)
    before = own_outputs(run_dir)
    out = run_cli("mtlssl-pretrain", *TINY, "resume=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    one_message(out, "resume=false would overwrite it")
    assert own_outputs(run_dir) == before


def test_cli_refuses_a_bad_hyper_parameter(tmp_path: Path) -> None:
    out = run_cli("mtlssl", "pretrain", *TINY, "ssl.temperature=0", "hydra.run.dir=run", cwd=tmp_path)
    one_message(out, "ssl.temperature must be > 0 (got 0); set e.g. ssl.temperature=0.5")
    assert not list((tmp_path / "run").rglob("*.pt"))


def test_cli_a_relaunch_the_stage_refuses_keeps_the_runs_hydra_record(tmp_path: Path) -> None:
    """Hydra rewrites .hydra/ before the stage can refuse (here: another weighting method); the record, which
    reproduce reads, must still be the launch that made the run."""
    launch = [*TINY, *TINY_TRAIN, "hydra.run.dir=run"]
    assert run_cli("mtlssl", "train-mtl", *launch, cwd=tmp_path).returncode == 0
    record = {p.name: p.read_bytes() for p in (tmp_path / "run" / ".hydra").glob("*.yaml")}
    out = run_cli("mtlssl", "train-mtl", *launch, "weighting=uncertainty", cwd=tmp_path)
    one_message(out, "weighting._target_: mtlssl.weighting.equal.Equal in the run, mtlssl.weighting.uncertainty.")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run" / ".hydra").glob("*.yaml")} == record
    assert not (tmp_path / "run" / ".hydra" / "previous").exists()
