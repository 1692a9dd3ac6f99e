"""Stage 2: multi-task training of one shared encoder with one head per task.

    mtlssl train-mtl encoder.init=<pretrain run dir> weighting=uncertainty encoder.lr_mult=0.1

The weighting method decides how the tasks share the encoder; the encoder is fine-tuned, frozen
(``encoder.mode=frozen``: a linear/MLP probe of all tasks at once) or trained at its own rate
(``encoder.lr_mult``). The best epoch by ``trainer.monitor`` on val is kept in ``best.pt`` and scored
on test at the end.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mtlssl.config import config_dir, instantiate, to_plain
from mtlssl.data.build import build_data
from mtlssl.engine.backward import GradientOptions
from mtlssl.engine.inference import score_tasks
from mtlssl.engine.loop import LoopConfig, Step, Stream, epoch_plan, fit, gradient_summary
from mtlssl.engine.optim import build_optimizer, param_groups
from mtlssl.engine.runtime import Runtime, grad_scaler
from mtlssl.engine.state import TrainState, init_backbone, read_checkpoint
from mtlssl.errors import UserError
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.models.build import build_model, model_spec
from mtlssl.objectives import SupervisedTasks
from mtlssl.reporting.console import console, metrics_table
from mtlssl.reporting.files import write_metrics
from mtlssl.reporting.tensorboard import flatten
from mtlssl.stages._common import run_stage, start_training
from mtlssl.tasks import Task, build_tasks
from mtlssl.weighting.base import Weighting

log = logging.getLogger(__name__)
ENCODER_MODES = ("finetune", "frozen")
ENGINE_KEYS = ("grad_space", "jacobian", "jacobian_chunk")  # weighting.* options for the engine, not the method


def check_monitor(monitor: str, tasks: list[Task]) -> str:
    """Fail before training, not after an epoch, when the model-selection metric does not exist."""
    valid = ["val/loss"] + [f"val/{t.name}/{m}" for t in tasks for m in (*t.metric_names, "loss")]
    if monitor not in valid:
        raise UserError(f"trainer.monitor={monitor} is not a validation metric; use one of {', '.join(valid)}")
    return monitor


def build_weighting(cfg: DictConfig, num_tasks: int, rt: Runtime) -> tuple[Weighting, GradientOptions]:
    """The method from ``weighting``, and the engine's options for it (the keys of ENGINE_KEYS)."""
    node = OmegaConf.masked_copy(cfg.weighting, [k for k in cfg.weighting if k not in ENGINE_KEYS])
    weighting = instantiate(node, "weighting", num_tasks=num_tasks)
    if not isinstance(weighting, Weighting):
        raise UserError(f"weighting._target_={cfg.weighting._target_} is not an mtlssl weighting method")
    options = GradientOptions(**{k: cfg.weighting[k] for k in ENGINE_KEYS if k in cfg.weighting})
    return weighting.to(rt.device), options


def build_multitask_model(cfg: DictConfig, tasks: list[Task], init: bool, rt: Runtime) -> tuple[
        MultiTaskArchitecture, list[dict]]:
    """The model of ``arch``, ``encoder`` and ``heads`` for ``tasks``, with the backbone of ``encoder.init``
    (when ``init``) and the shared part frozen for ``encoder.mode=frozen``; and its lineage."""
    if cfg.encoder.mode not in ENCODER_MODES:
        raise UserError(f"encoder.mode={cfg.encoder.mode} is not one of {', '.join(ENCODER_MODES)}")
    model = build_model(model_spec(cfg.arch.name, cfg.encoder.arch, cfg.heads, [t.spec for t in tasks]))
    lineage = [init_backbone(model, cfg.encoder.init)] if cfg.encoder.init and init else []
    model.to(rt.device, memory_format=rt.memory_format)
    model.freeze_shared(cfg.encoder.mode == "frozen")  # a frozen encoder keeps its BatchNorm statistics too
    return model, lineage


def build_state(cfg: DictConfig, model: MultiTaskArchitecture, weighting: Weighting, steps_per_epoch: int,
                rt: Runtime, lineage: list[dict]) -> TrainState:
    """The optimizer over the heads, the weighting's parameters and (unless frozen) the encoder at
    ``encoder.lr_mult``, its schedule and grad scaler, in a fresh train state."""
    heads = [p for name in model.task_names for p in model.task_parameters(name)]
    parts = [(heads, 1.0), (weighting, 1.0)]
    if not model.shared_frozen:
        parts.append((model.shared_parameters(), cfg.encoder.lr_mult))
    optimizer = build_optimizer(cfg.optim, param_groups(parts, cfg.optim.lr, cfg.optim.weight_decay))
    scheduler = instantiate(cfg.sched, "sched")(optimizer, total_steps=cfg.trainer.epochs * steps_per_epoch,
                                                steps_per_epoch=steps_per_epoch)
    return TrainState("mtl", to_plain(cfg), model, {"weighting": weighting}, optimizer, scheduler,
                      grad_scaler(rt.device, rt.precision), best={"epoch": 0, "value": math.nan}, lineage=lineage)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    rt, out, resume = start_training(cfg, run_dir, "mtl", min_epochs=1)
    data = build_data(cfg.data)
    tasks = build_tasks(data.select(cfg.tasks))
    train = Stream("train", data.split("train"), cfg.trainer.batch_size)
    val, test = data.split("val"), data.split("test")
    model, lineage = build_multitask_model(cfg, tasks, init=resume is None, rt=rt)
    weighting, gradients = build_weighting(cfg, len(tasks), rt)
    augment = instantiate(cfg.augmentation, "augmentation").to(rt.device)
    _, steps_per_epoch = epoch_plan(train, cfg.trainer.accumulate_grad_batches)
    state = build_state(cfg, model, weighting, steps_per_epoch, rt, lineage)
    monitor = check_monitor(cfg.trainer.monitor, tasks)
    if resume is not None:
        state.restore(resume)
    batch = cfg.trainer.eval_batch_size

    def evaluate(epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        return {**score_tasks(model, tasks, val, batch, rt, "val"),
                **{f"train/{name}/epoch_loss": value for name, value in train_losses.items()}}

    def final() -> dict[str, float]:  # the best epoch's weights, scored on test
        best = read_checkpoint(out.best, "best checkpoint", kinds=("mtl",))
        model.load_state_dict(best["model"]["state"])
        return {**{k: v for k, v in best["metrics"].items() if k.startswith("val/")},
                **score_tasks(model, tasks, test, batch, rt, "test"), "best_epoch": state.best["epoch"]}

    log.info("training %d tasks (%s) with %s weighting, encoder %s (%s%s) on %d images for %d epochs on %s",
             len(tasks), ", ".join(model.task_names), type(weighting).__name__, cfg.encoder.name, cfg.encoder.mode,
             f", lr x{cfg.encoder.lr_mult}" if not model.shared_frozen and cfg.encoder.lr_mult != 1 else "",
             len(train.data), cfg.trainer.epochs, rt)
    step = Step([SupervisedTasks(tasks, augment, rt.device, rt.memory_format)], weighting, gradients)
    loop = LoopConfig.from_trainer(cfg.trainer, cfg.seed, monitor=monitor, show=(monitor,),
                                   hparams=flatten(state.config))
    results = fit(state, [train], step, evaluate, loop, out, rt, final)
    write_metrics(out.path, {"stage": "train_mtl", "monitor": monitor, **results, "history": state.history,
                             "gradient_summary": gradient_summary(state.grad_sums),
                             "gradient_summary_steps": int(state.grad_sums.get("logged_steps", 0))})
    console.print(metrics_table(f"train-mtl: best epoch {state.best['epoch']} by {monitor}",
                                {k: v for k, v in results.items() if k.startswith("test/")}))
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train_mtl")
def main(cfg: DictConfig) -> float | None:
    return run_stage(run, cfg)  # the objective, for a sweeper (objective=<metric>)


if __name__ == "__main__":
    main()
