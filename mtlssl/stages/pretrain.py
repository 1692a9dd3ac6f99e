"""Stage 1: self-supervised pretraining of the encoder on unlabelled images (SimCLR).

    mtlssl pretrain [overrides]        e.g.  mtlssl pretrain trainer.epochs=50 ssl.temperature=0.2

The model is the backbone alone (an architecture with no tasks); the SSL method's loss on two augmented views
of each unlabelled image is the one row of the loss vector. A kNN monitor scores the features before training
and after every epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig
from torch import nn

from mtlssl.config import config_dir, instantiate, to_plain
from mtlssl.data.build import build_data
from mtlssl.data.image_set import Dataset
from mtlssl.engine.inference import collect
from mtlssl.engine.loop import LoopConfig, Step, Stream, epoch_plan, fit
from mtlssl.engine.optim import build_optimizer, param_groups
from mtlssl.engine.runtime import Runtime, grad_scaler
from mtlssl.engine.state import TrainState, init_backbone
from mtlssl.errors import UserError
from mtlssl.metrics import knn_accuracy
from mtlssl.models.build import build_model, model_spec
from mtlssl.objectives import SelfSupervised
from mtlssl.reporting.console import console, metrics_table
from mtlssl.reporting.files import write_metrics
from mtlssl.reporting.tensorboard import flatten
from mtlssl.stages._common import run_stage, start_training
from mtlssl.tasks import Task, build_tasks
from mtlssl.weighting.equal import Equal

log = logging.getLogger(__name__)


def monitor_tasks(cfg: DictConfig, data: Dataset) -> list[Task]:
    """The classification tasks the kNN monitor scores: ``monitor.tasks``, else all of the data's."""
    if cfg.monitor.get("disabled"):
        return []
    tasks = build_tasks(data.select(cfg.monitor.tasks) if cfg.monitor.tasks else data.tasks)
    if not cfg.monitor.tasks:
        tasks = [t for t in tasks if t.num_classes]
    unfit = [t.name for t in tasks if not t.num_classes]
    if unfit:
        raise UserError(f"monitor.tasks: {unfit} are not classification tasks; kNN needs multiclass or binary tasks")
    return tasks


def knn_monitor(encoder: nn.Module, tasks: list[Task], cfg: DictConfig, data: Dataset, rt: Runtime) -> dict:
    """Weighted kNN accuracy of the current features per task: val images as queries, the train split as bank."""
    if not tasks:
        return {}
    bank, queries = data.split("train"), data.split("val")
    bank_x = collect(encoder, bank, cfg.trainer.eval_batch_size, rt)
    query_x = collect(encoder, queries, cfg.trainer.eval_batch_size, rt)
    return {f"knn/{t.name}": knn_accuracy(bank_x, t.class_labels(bank.targets[t.name]), query_x,
                                          t.class_labels(queries.targets[t.name]), num_classes=t.num_classes,
                                          k=cfg.monitor.k, temperature=cfg.monitor.temperature)
            for t in tasks}


def run(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    rt, out, resume = start_training(cfg, run_dir, "pretrain", min_epochs=0)
    data = build_data(cfg.data)
    pool = Stream(cfg.pretrain_split, data.split(cfg.pretrain_split), cfg.trainer.batch_size)
    monitored = monitor_tasks(cfg, data)
    model = build_model(model_spec("hps", cfg.encoder.arch, None, []))
    lineage = [init_backbone(model, cfg.encoder.init)] if cfg.encoder.init and resume is None else []
    method = instantiate(cfg.ssl, "ssl", in_dim=model.backbone.out_dim)
    augment = instantiate(cfg.augmentation, "augmentation").to(rt.device)
    for module in (model, method):
        module.to(rt.device, memory_format=rt.memory_format)

    _, steps_per_epoch = epoch_plan(pool, accumulate=1)
    params = [*model.parameters(), *method.parameters()]
    optimizer = build_optimizer(cfg.optim, param_groups([(params, 1.0)], cfg.optim.lr, cfg.optim.weight_decay))
    scheduler = instantiate(cfg.sched, "sched")(optimizer, total_steps=cfg.trainer.epochs * steps_per_epoch,
                                                steps_per_epoch=steps_per_epoch)
    state = TrainState("pretrain", to_plain(cfg), model, {"ssl": method}, optimizer, scheduler,
                       grad_scaler(rt.device, rt.precision), lineage=lineage)
    if resume is not None:
        state.restore(resume)

    def evaluate(epoch: int, train_losses: dict[str, float]) -> dict[str, float]:
        loss = {"loss": train_losses["ssl"]} if train_losses else {}  # none before the first epoch
        return {**loss, **knn_monitor(model.backbone, monitored, cfg, data, rt)}

    def final() -> dict[str, float]:
        return {k: v for k, v in state.history[-1].items() if k != "epoch"} if state.history else {}

    log.info("pretraining %s with %s on %d images of '%s' for %d epochs (%d steps each) on %s", cfg.encoder.name,
             type(method).__name__, len(pool.data), pool.name, cfg.trainer.epochs, steps_per_epoch, rt)
    step = Step([SelfSupervised(method, augment, rt.device, rt.memory_format, stream=pool.name)], Equal(1))
    loop = LoopConfig.from_trainer(cfg.trainer, cfg.seed, initial_eval=bool(monitored), hparams=flatten(state.config),
                                   show=tuple(f"knn/{t.name}" for t in monitored))
    result = fit(state, [pool], step, evaluate, loop, out, rt, final)

    history = state.history
    initial = {k: v for k, v in history[0].items() if k != "epoch"} if history and history[0]["epoch"] == 0 else {}
    write_metrics(out.path, {"stage": "pretrain", "initial": initial, "final": result, "history": history})
    console.print(metrics_table("pretrain: final epoch", result))
    return result


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="pretrain")
def main(cfg: DictConfig) -> float | None:
    return run_stage(run, cfg)  # the objective, for a sweeper (objective=<metric>)


if __name__ == "__main__":
    main()
