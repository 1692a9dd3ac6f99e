"""Stage 1: self-supervised pretraining of the encoder on unlabelled images (SimCLR).

    mtlssl pretrain [overrides]        e.g.  mtlssl pretrain trainer.epochs=50 ssl.temperature=0.2
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from mtlssl.config import config_dir, instantiate, to_plain
from mtlssl.data.build import build_data
from mtlssl.data.image_set import Dataset
from mtlssl.encoders.build import build_encoder, load_encoder_init
from mtlssl.engine.checkpoint import save_checkpoint
from mtlssl.engine.inference import collect
from mtlssl.engine.nonfinite import NonFiniteGuard
from mtlssl.engine.optim import apply_gradients, build_optimizer, current_lr, param_groups
from mtlssl.engine.preemption import (
    PreemptionGuard,
    check_layout,
    epoch_position,
    periodic_save,
    resume_epoch,
)
from mtlssl.engine.rng import AUGMENT, SHUFFLE, generator, rng_state, seed_everything, set_rng_state
from mtlssl.engine.run_dir import RunDir
from mtlssl.engine.runtime import Runtime, autocast, grad_scaler
from mtlssl.errors import UserError
from mtlssl.metrics import knn_accuracy
from mtlssl.reporting.console import console, metrics_table, progress
from mtlssl.reporting.files import write_metrics
from mtlssl.reporting.tensorboard import TensorBoard, flatten
from mtlssl.stages._common import check_trainer, run_stage
from mtlssl.tasks import Task, build_tasks

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
    rt = Runtime.create(cfg.device, cfg.precision, cfg.trainer.channels_last)
    check_trainer(cfg.trainer, min_epochs=0)
    out = RunDir(run_dir)
    resume = out.resume_state(cfg.resume, "pretrain")
    out.check_unchanged(resume, cfg, ("optim._target_",))
    seed_everything(cfg.seed, cfg.trainer.deterministic)

    data = build_data(cfg.data)
    pool = data.split(cfg.pretrain_split)
    monitored = monitor_tasks(cfg, data)
    encoder = build_encoder(cfg.encoder.arch)
    if cfg.encoder.init and resume is None:
        load_encoder_init(encoder, cfg.encoder.arch, cfg.encoder.init)
    method = instantiate(cfg.ssl, "ssl", in_dim=encoder.out_dim)
    augment = instantiate(cfg.augmentation, "augmentation").to(rt.device)
    model = nn.ModuleDict({"encoder": encoder, "ssl": method}).to(rt.device, memory_format=rt.memory_format)

    epochs, batch_size = cfg.trainer.epochs, cfg.trainer.batch_size
    steps_per_epoch = pool.steps_per_epoch(batch_size, cfg.pretrain_split)
    optimizer = build_optimizer(cfg.optim, param_groups([(model, 1.0)], cfg.optim.lr, cfg.optim.weight_decay))
    scheduler = instantiate(cfg.sched, "sched")(optimizer, total_steps=epochs * steps_per_epoch,
                                                steps_per_epoch=steps_per_epoch)
    scaler = grad_scaler(rt.device, rt.precision)
    start_epoch, step, history, position = 0, 0, [], None
    guard = NonFiniteGuard(cfg.trainer.nonfinite, cfg.trainer.max_nonfinite_skips, last_good=out.last)
    if resume is not None:
        encoder.load_state_dict(resume["encoder"]["state"])
        method.load_state_dict(resume["ssl"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        set_rng_state(resume["rng"])
        start_epoch, step, history = resume["epoch"], resume["step"], resume["history"]
        position, guard.skipped = resume.get("position"), resume.get("nonfinite_skips", 0)
        log.info("resuming from %s at epoch %d, step %d", out.last, start_epoch, step)

    def checkpoint(epoch: int, record: dict, position: dict | None = None) -> dict:
        return {
            "kind": "pretrain", "config": to_plain(cfg), "epoch": epoch, "step": step, "history": history,
            "encoder": {"arch": to_plain(cfg.encoder.arch), "state": encoder.state_dict()},
            "ssl": method.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "metrics": record, "position": position,
            "nonfinite_skips": guard.skipped,
        }

    layout = {"seed": cfg.seed, "trainer.batch_size": batch_size, "batches_per_epoch": steps_per_epoch}
    check_layout(position, layout)
    grad_groups = {"the encoder": encoder, "the SSL projector": method}
    save_every = cfg.trainer.checkpoint_every_steps
    out.prepare(cfg)  # only now: a relaunch refused above has written nothing
    tb = TensorBoard(out.tensorboard, purge_step=step + 1 if resume is not None else None)
    log.info("pretraining %s with %s on %d images of '%s' for %d epochs (%d steps each) on %s",
             cfg.encoder.name, type(method).__name__, len(pool), cfg.pretrain_split, epochs, steps_per_epoch, rt)
    if not history and monitored:  # the encoder before any pretraining: the reference the epochs must beat
        history.append({"epoch": 0, **knn_monitor(encoder, monitored, cfg, data, rt)})
        log.info("epoch 0 (initial encoder)  %s", describe(history[0]))
    with progress() as bar, PreemptionGuard() as preemption:
        for epoch in range(start_epoch, epochs):
            model.train()
            shuffle = generator(cfg.seed, SHUFFLE, epoch)
            aug_gen = generator(cfg.seed, AUGMENT, epoch, device=rt.device)
            # Resumed mid-epoch: the same batches and random draws, from where it stopped.
            first, counted, loss_sum = resume_epoch(position, torch.zeros((), device=rt.device), aug_gen)
            position = None
            task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps_per_epoch, completed=first, rate="")
            seen, tic = 0, time.perf_counter()
            batches = pool.batches(batch_size, shuffle=True, generator=shuffle, drop_last=True, skip=first)
            for i, (images, _) in enumerate(batches, start=first):
                views = torch.cat(augment.views(images.to(rt.device, non_blocking=True), method.num_views, aug_gen))
                with autocast(rt.device, rt.precision):
                    loss = method.loss(encoder(views.contiguous(memory_format=rt.memory_format)))
                optimizer.zero_grad(set_to_none=True)
                stepped = guard.losses_ok(loss.view(1), ["ssl"], epoch, step)
                if stepped:
                    scaler.scale(loss).backward()
                    stepped = scaler.is_enabled() or guard.grads_ok(grad_groups, epoch, step)
                if stepped:  # (fp16 overflow is the grad scaler's: it skips that step itself)
                    apply_gradients(optimizer, scheduler, scaler, cfg.trainer.grad_clip)
                    step += 1
                    loss_sum += loss.detach()
                    counted += 1
                    if step % cfg.trainer.log_every == 0:
                        tb.scalars({"train/loss": loss.item(), "train/lr": current_lr(optimizer)}, step)
                seen += images.shape[0]
                bar.update(task, advance=1, rate=f"{seen / (time.perf_counter() - tic):,.0f} img/s")
                # Between epoch ends only: the last step's state is saved whole by the epoch end below.
                if i + 1 < steps_per_epoch and (preemption.requested or periodic_save(save_every, stepped, step)):
                    here = epoch_position(i + 1, layout, loss_sum, counted, aug_gen)
                    save_checkpoint(checkpoint(epoch, history[-1] if history else {}, here), out.last)
                    if preemption.requested:
                        preemption.stop(out.last, f"epoch {epoch + 1}, step {step}")
            bar.remove_task(task)
            seconds = time.perf_counter() - tic
            record = {"epoch": epoch + 1, "loss": (loss_sum / max(counted, 1)).item(), "images_per_s": seen / seconds,
                      **({"nonfinite_skips": guard.skipped} if guard.skipped else {}),
                      **knn_monitor(encoder, monitored, cfg, data, rt)}
            history.append(record)
            tb.scalars({k: v for k, v in record.items() if k != "epoch"}, step, prefix="epoch/")
            log.info("epoch %d/%d  %s  (%.1fs)", epoch + 1, epochs, describe(record), seconds)
            save_checkpoint(checkpoint(epoch + 1, record), out.last)
            if preemption.requested:  # signalled during the kNN monitor: the epoch is saved whole
                preemption.stop(out.last, f"the end of epoch {epoch + 1}")
    if not out.last.exists():  # trainer.epochs=0: the initial encoder, e.g. the random-init baseline for probes
        save_checkpoint(checkpoint(0, history[0] if history else {}), out.last)

    final = {k: v for k, v in history[-1].items() if k != "epoch"} if history else {}
    tb.hparams(flatten(to_plain(cfg)), final)
    tb.close()
    initial = {k: v for k, v in history[0].items() if k != "epoch"} if history and history[0]["epoch"] == 0 else {}
    write_metrics(out.path, {"stage": "pretrain", "initial": initial, "final": final, "history": history})
    console.print(metrics_table("pretrain: final epoch", final))
    return final


def describe(record: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="pretrain")
def main(cfg: DictConfig) -> float | None:
    return run_stage(run, cfg)  # the objective, for a sweeper (objective=<metric>)


if __name__ == "__main__":
    main()
