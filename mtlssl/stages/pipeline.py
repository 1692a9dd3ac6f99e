"""pretrain -> train-mtl -> eval in one parent run directory, plus the scratch baseline.

    mtlssl pipeline [overrides]      e.g.  mtlssl pipeline weighting=uncertainty pretrain.trainer.epochs=20

The same train-mtl runs twice with one budget: from the pretrained encoder and from a random one.
The closing table puts their test metrics side by side, as measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

import hydra
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from mtlssl.config import config_dir, to_plain
from mtlssl.errors import UserError
from mtlssl.reporting import provenance
from mtlssl.reporting.console import console, fmt
from mtlssl.reporting.files import write_metrics, write_resolved_config
from mtlssl.reporting.log_file import log_file
from mtlssl.stages import evaluate, pretrain, train_mtl
from mtlssl.stages._common import check_launch, run_stage
from mtlssl.tasks import HIGHER_IS_BETTER

log = logging.getLogger(__name__)

# The top-level keys each stage takes from the pipeline config; the rest comes from its own section.
RUNTIME = ("seed", "device", "precision", "resume")
SHARED = {
    "pretrain": RUNTIME + ("data", "encoder"),
    "train_mtl": RUNTIME + ("data", "arch", "encoder", "tasks", "heads", "weighting"),
    "eval": RUNTIME,
}


def stage_config(cfg: DictConfig, stage: str, **updates: object) -> DictConfig:
    merged = OmegaConf.merge(OmegaConf.masked_copy(cfg, list(SHARED[stage])), cfg.get(stage, {}), updates)
    return merged  # type: ignore[return-value]


def comparison_table(pretrained: dict[str, float], scratch: dict[str, float]) -> Table:
    table = Table(title="test metrics: train-mtl from the SimCLR encoder vs from scratch (same budget)",
                  title_justify="left")
    for column in ("task", "metric", "pretrained", "scratch", "change"):
        table.add_column(column, justify="left" if column in ("task", "metric") else "right")
    for key, value in pretrained.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[2] == "loss":  # keep the task metrics, not the losses
            continue
        _, task, metric = parts
        other = scratch.get(key)
        change = "-" if other is None else f"{value - other:+.4f}"
        better = other is not None and (value > other) == HIGHER_IS_BETTER.get(metric, False) and value != other
        table.add_row(task, metric, f"[bold]{fmt(value)}[/]" if better else fmt(value), fmt(other), change)
    return table


def training_configs(cfg: DictConfig, run_dir: Path) -> dict[str, DictConfig]:
    """The config of each training stage, by its sub-directory."""
    configs = {"pretrain": stage_config(cfg, "pretrain"),
               "train_mtl": stage_config(cfg, "train_mtl", encoder={"init": str(run_dir / "pretrain")})}
    if cfg.scratch_baseline:
        configs["train_mtl_scratch"] = stage_config(cfg, "train_mtl", encoder={"init": None})
    return configs


def check_stages(cfg: DictConfig, training: dict[str, DictConfig], run_dir: Path) -> None:
    """A relaunch continues each training stage's run: what any of them would refuse (a setting it cannot apply,
    a bad trainer or eval batch size) is refused for all, in one message, before anything is written."""
    refused = []
    try:
        evaluate.check_batch_size(cfg.eval.batch_size, "eval.batch_size")
    except UserError as err:
        refused.append(str(err))
    for sub_dir, stage_cfg in training.items():
        kind, min_epochs = ("pretrain", 0) if sub_dir == "pretrain" else ("mtl", 1)
        try:
            check_launch(stage_cfg, run_dir / sub_dir, kind, min_epochs)
        except UserError as err:
            refused.append(f"the pipeline's {sub_dir} stage: {err}")
    if refused:
        raise UserError("; ".join(refused))


def run(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    run_dir = Path(run_dir)
    training = training_configs(cfg, run_dir)
    check_stages(cfg, training, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(run_dir, cfg)
    provenance.record(run_dir)

    def stage(module: ModuleType, name: str, sub_dir: str, **updates: object) -> dict[str, float]:
        stage_cfg = training[sub_dir] if sub_dir in training else stage_config(cfg, name, **updates)
        with log_file(run_dir / sub_dir / f"{name}.log"):
            return module.run(stage_cfg, run_dir / sub_dir)

    log.info("[1/4] pretrain -> %s", run_dir / "pretrain")
    stage(pretrain, "pretrain", "pretrain")
    log.info("[2/4] train-mtl from the pretrained encoder -> %s", run_dir / "train_mtl")
    results = {"pretrained": stage(train_mtl, "train_mtl", "train_mtl")}
    if cfg.scratch_baseline:
        log.info("[3/4] train-mtl from a random encoder (baseline) -> %s", run_dir / "train_mtl_scratch")
        results["scratch"] = stage(train_mtl, "train_mtl", "train_mtl_scratch")
    log.info("[4/4] eval: probe the pretrained encoder and score the multi-task models")
    eval_base = {"channels_last": cfg.train_mtl.trainer.channels_last, "data": None}
    results["probe"] = stage(evaluate, "eval", "eval_pretrain", ckpt=str(run_dir / "pretrain"), **eval_base)
    for name, sub in (("pretrained", "train_mtl"), ("scratch", "train_mtl_scratch")):
        if name in results:
            results[f"eval_{name}"] = stage(evaluate, "eval", f"eval_{name}", ckpt=str(run_dir / sub), **eval_base)

    split = cfg.eval.split
    tests = {k: {m: v for m, v in results[k].items() if m.startswith(f"{split}/")}
             for k in ("eval_pretrained", "eval_scratch") if k in results}
    if len(tests) == 2:
        console.print(comparison_table(tests["eval_pretrained"], tests["eval_scratch"]))
    flat = {f"{group}/{name}": value for group, values in results.items() for name, value in values.items()
            if isinstance(value, (int, float))}
    write_metrics(run_dir, {"stage": "pipeline", **results, "config": to_plain(cfg)})
    return flat


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="pipeline")
def main(cfg: DictConfig) -> float | None:
    return run_stage(run, cfg)  # the objective, for a sweeper (objective=<metric>)


if __name__ == "__main__":
    main()
