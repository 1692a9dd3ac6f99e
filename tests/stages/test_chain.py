"""The stages in process on tiny data: checkpoints are handed along and the numbers agree."""

import json
from pathlib import Path

import pytest
import torch

from mtlssl.engine.state import FORMAT_VERSION, read_checkpoint
from mtlssl.errors import UserError
from mtlssl.stages import evaluate, pipeline, pretrain, train_mtl
from tests.conftest import tiny


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_pretrain_writes_a_resumable_checkpoint_and_reports(pretrained_run: Path) -> None:
    ckpt = read_checkpoint(pretrained_run, "test", kinds=("pretrain",))
    # the writer stamps the format (read raw: read_checkpoint would upgrade an unstamped file as format 1)
    raw = torch.load(pretrained_run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION == 2 and raw["kind"] == "pretrain"
    assert ckpt["epoch"] == 1 and {"optimizer", "scheduler", "rng"} <= ckpt["train"].keys() and "ssl" in ckpt["extras"]
    metrics = read_metrics(pretrained_run)
    assert metrics["stage"] == "pretrain" and [h["epoch"] for h in metrics["history"]] == [0, 1]
    for task in ("shape", "colour", "outlined"):  # every classification task, before and after pretraining
        assert 0.0 <= metrics["initial"][f"knn/{task}"] <= 1.0 and 0.0 <= metrics["final"][f"knn/{task}"] <= 1.0
    assert (pretrained_run / "resolved_config.yaml").is_file()
    assert any((pretrained_run / "tb").glob("events.out.tfevents.*"))


def test_train_mtl_from_pretrained_encoder_starts_from_its_weights(pretrained_run: Path, tmp_path: Path) -> None:
    cfg = tiny("train_mtl", f"encoder.init={pretrained_run}", "trainer.epochs=0")
    # Zero epochs would leave no best checkpoint, so check the initialisation through build_model instead.
    from mtlssl.data.build import build_data
    from mtlssl.engine.runtime import Runtime
    from mtlssl.tasks import build_tasks

    rt = Runtime.create("cpu", "32", False)
    model, lineage = train_mtl.build_multitask_model(cfg, build_tasks(build_data(cfg.data).tasks), init=True, rt=rt)
    saved = read_checkpoint(pretrained_run, "test")
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, saved["model"]["state"][f"backbone.{name}"]), name
    assert lineage == [{"path": saved["path"], "kind": "pretrain", "epoch": 1, "step": saved["step"], "lineage": []}]


def test_chain_pretrain_train_mtl_eval_reproduces_test_metrics(pretrained_run: Path, tmp_path: Path) -> None:
    mtl_dir, eval_dir = tmp_path / "mtl", tmp_path / "eval"
    results = train_mtl.run(tiny("train_mtl", f"encoder.init={pretrained_run}", "trainer.epochs=2"), mtl_dir)
    assert {"checkpoints/best.pt", "checkpoints/last.pt", "metrics.json", "resolved_config.yaml"} <= {
        str(p.relative_to(mtl_dir)) for p in mtl_dir.rglob("*") if p.is_file()}
    for task in ("shape", "colour", "outlined"):
        assert 0.0 <= results[f"test/{task}/accuracy"] <= 1.0
    assert results["test/size/mae"] >= 0 and results["test/position/rmse"] >= 0

    scored = evaluate.run(tiny("eval", f"ckpt={mtl_dir}"), eval_dir)
    recorded = {k: v for k, v in read_metrics(mtl_dir).items() if k.startswith("test/")}
    assert recorded and scored.keys() >= recorded.keys()
    for key, value in recorded.items():
        assert scored[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_eval_of_a_pretrain_checkpoint_probes_the_encoder(pretrained_run: Path, tmp_path: Path) -> None:
    metrics = evaluate.run(tiny("eval", f"ckpt={pretrained_run}"), tmp_path)
    for task in ("shape", "colour", "outlined"):
        assert 0.0 <= metrics[f"test/{task}/linear_probe"] <= 1.0
        assert 0.0 <= metrics[f"test/{task}/knn"] <= 1.0
    assert not any("size" in k for k in metrics)  # regression tasks are not probed by classifiers


def test_resume_continues_exactly(tmp_path: Path) -> None:
    straight = train_mtl.run(tiny("train_mtl", "trainer.epochs=2", "weighting=uncertainty"), tmp_path / "straight")
    split_dir = tmp_path / "split"
    train_mtl.run(tiny("train_mtl", "trainer.epochs=1", "weighting=uncertainty"), split_dir)
    # Relaunching in the same run directory picks up last.pt; the 2-epoch schedule is rebuilt from the
    # config, so resume a 2-epoch run that was stopped after epoch 1 by rewriting its budget.
    ckpt = torch.load(split_dir / "checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    resumed = train_mtl.run(tiny("train_mtl", "trainer.epochs=2", "weighting=uncertainty"), split_dir)
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert resumed[key] == straight[key], key


def test_pipeline_runs_all_stages_and_compares_with_scratch(tmp_path: Path) -> None:
    flat = pipeline.run(tiny("pipeline"), tmp_path)
    for sub, stage in (("pretrain", "pretrain"), ("train_mtl", "train_mtl"), ("train_mtl_scratch", "train_mtl"),
                       ("eval_pretrain", "eval"), ("eval_pretrained", "eval"), ("eval_scratch", "eval")):
        assert (tmp_path / sub / "metrics.json").is_file(), sub
        assert "INFO" in (tmp_path / sub / f"{stage}.log").read_text(), sub
    assert "eval_pretrained/test/shape/accuracy" in flat and "eval_scratch/test/shape/accuracy" in flat
    mtl_cfg = (tmp_path / "train_mtl" / "resolved_config.yaml").read_text()
    assert str(tmp_path / "pretrain") in mtl_cfg


@pytest.mark.parametrize(
    "stage,overrides,message",
    [
        ("train_mtl", ["encoder.init=/no/such/run"], "does not exist"),
        ("train_mtl", ["tasks=[shape,nope]"], "unknown task 'nope'"),
        ("train_mtl", ["trainer.batch_size=4096"], "larger than the"),
        ("train_mtl", ["weighting=static", "weighting.weights=[1,2]"], "2 values for 5 tasks"),
        ("train_mtl", ["optim.lr=0"], "optim.lr must be > 0"),
        ("train_mtl", ["trainer.monitor=val/shape/mae"], "not a validation metric"),
        ("pretrain", ["ssl.temperature=0"], "temperature must be > 0"),
        ("eval", ["ckpt=/no/such.pt"], "does not exist"),
    ],
)
def test_user_errors_name_the_problem(stage: str, overrides: list[str], message: str, tmp_path: Path) -> None:
    run = {"train_mtl": train_mtl.run, "pretrain": pretrain.run, "eval": evaluate.run}[stage]
    with pytest.raises(UserError, match=message):
        run(tiny(stage, *overrides), tmp_path)


def test_wrong_checkpoint_kind_and_encoder_mismatch(pretrained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="pretrain checkpoint, but a mtl checkpoint is needed"):
        read_checkpoint(pretrained_run, "resume", kinds=("mtl",))
    with pytest.raises(UserError, match="encoder mismatch"):
        train_mtl.run(tiny("train_mtl", f"encoder.init={pretrained_run}", "encoder.arch.width=6"), tmp_path)


def test_eval_against_single_task_baselines_reports_delta_m_and_delta_p(tmp_path: Path) -> None:
    from mtlssl.metrics.mtl_summary import delta_m, delta_p

    single = {}
    for task in ("shape", "position"):  # as a sweep lays them out: <sweep>/<overrides>/seed=<n>
        job = tmp_path / "single" / f"tasks=[{task}]" / "seed=0"
        train_mtl.run(tiny("train_mtl", f"tasks=[{task}]"), job)
        single.update({k: v for k, v in read_metrics(job).items() if k.startswith("test/")})
    train_mtl.run(tiny("train_mtl", "tasks=[shape,position]"), tmp_path / "mtl")
    scored = evaluate.run(tiny("eval", f"ckpt={tmp_path / 'mtl'}", f"baselines=[{tmp_path / 'single'}]"),
                          tmp_path / "eval")
    multi = {k: v for k, v in read_metrics(tmp_path / "mtl").items() if k.startswith("test/")}
    # Re-scoring the baselines on the same split reproduces their recorded test metrics, hence the same deltas.
    assert scored["test/delta_m"] == pytest.approx(delta_m(multi, single), rel=1e-4, abs=1e-4)
    assert scored["test/delta_p"] == pytest.approx(delta_p(multi, single), rel=1e-4, abs=1e-4)
    with pytest.raises(UserError, match="a single-task baseline is a train-mtl run with one task"):
        evaluate.run(tiny("eval", f"ckpt={tmp_path / 'mtl'}", f"baselines=[{tmp_path / 'mtl'}]"), tmp_path / "bad")


def test_zero_pretrain_epochs_save_the_initial_encoder_for_a_random_init_baseline(tmp_path: Path) -> None:
    pretrain.run(tiny("pretrain", "trainer.epochs=0"), tmp_path / "random")
    ckpt = read_checkpoint(tmp_path / "random", "test", kinds=("pretrain",))
    assert ckpt["epoch"] == 0
    probed = evaluate.run(tiny("eval", f"ckpt={tmp_path / 'random'}"), tmp_path / "eval")
    assert 0.0 <= probed["test/shape/linear_probe"] <= 1.0


def test_deterministic_flag_turns_on_deterministic_algorithms_and_reruns_match(tmp_path: Path) -> None:
    try:
        first = train_mtl.run(tiny("train_mtl", "trainer.deterministic=true"), tmp_path / "a")
        assert torch.are_deterministic_algorithms_enabled()
        second = train_mtl.run(tiny("train_mtl", "trainer.deterministic=true"), tmp_path / "b")
    finally:
        torch.use_deterministic_algorithms(False)
    assert first == second
    train_mtl.run(tiny("train_mtl"), tmp_path / "c")
    assert not torch.are_deterministic_algorithms_enabled()  # each run sets it from its own config
