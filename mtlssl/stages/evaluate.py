"""Stage 3: score a checkpoint.

    mtlssl eval ckpt=<run dir or .pt> [split=test] [data=<option>]

An mtl checkpoint gets every task's metrics on the split; a pretrain checkpoint (or any, with
``probe.enabled=true``) gets a linear probe and weighted kNN on frozen features for every
classification task. The data defaults to the one the checkpoint was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mtlssl.config import config_dir
from mtlssl.data.build import build_data
from mtlssl.data.image_set import Dataset
from mtlssl.engine.inference import collect, score_tasks
from mtlssl.engine.runtime import Runtime
from mtlssl.engine.state import read_checkpoint, rebuild_model
from mtlssl.errors import UserError
from mtlssl.metrics import knn_accuracy, linear_probe_accuracy
from mtlssl.metrics.mtl_summary import delta_m, delta_p
from mtlssl.models.backbones.base import Backbone
from mtlssl.reporting import provenance
from mtlssl.reporting.console import console, metrics_table
from mtlssl.reporting.files import write_metrics, write_resolved_config
from mtlssl.stages._common import run_stage
from mtlssl.tasks import build_tasks

log = logging.getLogger(__name__)


def probe(encoder: Backbone, data: Dataset, split: str, cfg: DictConfig, batch_size: int, rt: Runtime) -> dict:
    """Linear-probe and kNN accuracy of frozen features for each multiclass and binary task."""
    tasks = [t for t in build_tasks(data.tasks) if t.num_classes]
    if not tasks:
        return {}
    fit, score = data.split(cfg.train_split), data.split(split)
    fit_x, score_x = collect(encoder, fit, batch_size, rt), collect(encoder, score, batch_size, rt)
    metrics = {}
    for task in tasks:
        fit_y, score_y = task.class_labels(fit.targets[task.name]), task.class_labels(score.targets[task.name])
        metrics[f"{split}/{task.name}/linear_probe"] = linear_probe_accuracy(
            fit_x, fit_y, score_x, score_y, task.num_classes, weight_decay=cfg.weight_decay)
        metrics[f"{split}/{task.name}/knn"] = knn_accuracy(
            fit_x, fit_y, score_x, score_y, task.num_classes, k=cfg.k, temperature=cfg.temperature)
    return metrics


def score_mtl(ckpt: dict, data: Dataset, split: str, batch_size: int, rt: Runtime) -> dict[str, float]:
    """An mtl checkpoint's per-task metrics on ``split`` of ``data``."""
    model = rebuild_model(ckpt)
    missing = [name for name in model.task_names if name not in data.split(split).targets]
    if missing:
        raise UserError(f"checkpoint '{ckpt['path']}': tasks {missing} have no labels in split '{split}' of data "
                        f"'{data.name}'; evaluate on the data it was trained on")
    model.to(rt.device, memory_format=rt.memory_format)
    return score_tasks(model, build_tasks(model.tasks), data.split(split), batch_size, rt, split)


def stored_data(ckpt: dict) -> Dataset:
    """The data a checkpoint was trained on, from its stored config (checked like any config: a file never names
    code that is not one of the data builders)."""
    stored = ckpt["config"].get("data")
    if not isinstance(stored, dict):
        raise UserError(f"ckpt: '{ckpt['path']}' stores no data config to evaluate on; name the data, e.g. "
                        "data=shapes")
    return build_data(OmegaConf.create(stored), f"the config stored in '{ckpt['path']}'")


def expand_runs(paths: list[str]) -> list[Path]:
    """Run directories and checkpoints as given; a sweep directory (no checkpoints/ of its own) stands for
    every job directory below it that holds one (``mtlssl train-mtl -m 'tasks=[a],[b]'`` makes such a
    sweep: ``<sweep>/<overrides>/seed=<n>/``)."""
    runs: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        jobs = sorted(c.parent for c in path.rglob("checkpoints") if c.is_dir()) if path.is_dir() else []
        runs.extend(jobs if path.is_dir() and not (path / "checkpoints").is_dir() and jobs else [path])
    return runs


def against_baselines(metrics: dict[str, float], baselines: list[str], data: Dataset, split: str, batch_size: int,
                      rt: Runtime) -> dict[str, float]:
    """delta_m% and delta_p% of ``metrics`` against single-task runs, each re-scored on the same split."""
    single: dict[str, float] = {}
    for path in expand_runs(baselines):
        ckpt = read_checkpoint(path, "baselines", kinds=("mtl",))
        if len(ckpt["tasks"]) != 1:
            raise UserError(f"baselines: '{ckpt['path']}' was trained on {len(ckpt['tasks'])} tasks; a single-task "
                            "baseline is a train-mtl run with one task (tasks=[<name>])")
        single.update(score_mtl(ckpt, data, split, batch_size, rt))
    return {f"{split}/delta_m": delta_m(metrics, single), f"{split}/delta_p": delta_p(metrics, single)}


def check_batch_size(batch_size: int, key: str = "batch_size") -> None:
    if not batch_size >= 1:
        raise UserError(f"{key} must be >= 1 (got {batch_size}); set e.g. {key}=512")


def run(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    check_batch_size(cfg.batch_size)
    rt = Runtime.create(cfg.device, cfg.precision, cfg.channels_last)
    ckpt = read_checkpoint(cfg.ckpt, "ckpt")
    data = build_data(cfg.data) if cfg.get("data") else stored_data(ckpt)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    write_resolved_config(run_dir, cfg)
    provenance.record(run_dir)

    log.info("scoring %s checkpoint %s (epoch %s) on split '%s' of '%s'", ckpt["kind"], ckpt["path"],
             ckpt.get("epoch"), cfg.split, data.name)
    metrics: dict[str, float] = {}
    if ckpt["kind"] == "mtl":
        metrics.update(score_mtl(ckpt, data, cfg.split, cfg.batch_size, rt))
        if cfg.baselines:
            metrics.update(against_baselines(metrics, list(cfg.baselines), data, cfg.split, cfg.batch_size, rt))
    elif cfg.baselines:
        raise UserError("baselines= compares a multi-task checkpoint with single-task runs; ckpt is a pretrain "
                        "checkpoint")
    enabled = str(cfg.probe.enabled).lower()
    if enabled == "true" or (enabled == "auto" and ckpt["kind"] == "pretrain"):
        encoder = rebuild_model(ckpt).backbone
        encoder.to(rt.device, memory_format=rt.memory_format)
        metrics.update(probe(encoder, data, cfg.split, cfg.probe, cfg.batch_size, rt))

    log.info("results: %s", "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    write_metrics(run_dir, {"stage": "eval", "ckpt": ckpt["path"], "kind": ckpt["kind"], **metrics})
    console.print(metrics_table(f"eval: {ckpt['kind']} checkpoint, split '{cfg.split}'", metrics))
    return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    return run_stage(run, cfg)  # the objective, for a sweeper (objective=<metric>)


if __name__ == "__main__":
    main()
