"""Stage 2: multi-task training of one shared encoder with one head per task.

    mtlssl train-mtl encoder.init=<pretrain run dir> weighting=uncertainty encoder.lr_mult=0.1

The weighting method decides how the tasks share the encoder; the encoder is fine-tuned, frozen
(``encoder.mode=frozen``: a linear/MLP probe of all tasks at once) or trained at its own rate
(``encoder.lr_mult``). The best epoch by ``trainer.monitor`` on val is kept in ``best.pt`` and scored
on test at the end.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mtlssl.config import config_dir, instantiate, to_plain
from mtlssl.data.build import build_data
from mtlssl.encoders.build import build_encoder, load_encoder_init
from mtlssl.engine.checkpoint import load_checkpoint, save_checkpoint
from mtlssl.engine.gradients import cosine_heatmap, gradient_stats
from mtlssl.engine.inference import score_tasks
from mtlssl.engine.mtl_backward import GradientOptions, mtl_backward
from mtlssl.engine.nonfinite import NonFiniteGuard
from mtlssl.engine.optim import apply_gradients, build_optimizer, current_lr, param_groups, set_trainable
from mtlssl.engine.preemption import (
    PreemptionGuard,
    check_layout,
    epoch_position,
    periodic_save,
    resume_epoch,
)
from mtlssl.engine.rng import AUGMENT, SHUFFLE, WEIGHTING, generator, rng_state, seed_everything, set_rng_state
from mtlssl.engine.run_dir import RunDir
from mtlssl.engine.runtime import Runtime, autocast, grad_scaler
from mtlssl.errors import UserError
from mtlssl.model import MultiTaskModel
from mtlssl.reporting.console import console, metrics_table, progress
from mtlssl.reporting.files import write_metrics
from mtlssl.reporting.tensorboard import TensorBoard, flatten
from mtlssl.stages._common import check_trainer, run_stage
from mtlssl.tasks import Task, TaskSpec, build_tasks, is_better
from mtlssl.weighting.base import Weighting

log = logging.getLogger(__name__)
ENCODER_MODES = ("finetune", "frozen")
ENGINE_KEYS = ("grad_space", "jacobian", "jacobian_chunk")  # weighting.* options for the engine, not the method


def task_losses(tasks: list[Task], outputs: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
    return torch.stack([t.loss(outputs[t.name], targets[t.name]) for t in tasks])


def log_step(tb: TensorBoard, tasks: list[Task], losses: Tensor, weighting: Weighting, jac: Tensor | None,
             lr: float, step: int) -> dict[str, float]:
    """Per-step TensorBoard scalars: each task's loss and weight, its gradient norm, the pairwise gradient
    cosines and the share of conflicting pairs, and the learning rate. Returns the weight and gradient stats."""
    names = [t.name for t in tasks]
    tb.scalars({f"train/{n}/loss": v for n, v in zip(names, losses.tolist(), strict=True)}, step)
    stats = {f"weights/{n}": v for n, v in zip(names, weighting.last_weights.tolist(), strict=True)}
    if jac is not None:
        stats.update(gradient_stats(jac, names))
    tb.scalars({**stats, "train/loss": losses.sum().item(), "train/lr": lr}, step)
    return stats


def check_monitor(monitor: str, tasks: list[Task]) -> str:
    """Fail before training, not after an epoch, when the model-selection metric does not exist."""
    valid = ["val/loss"] + [f"val/{t.name}/{m}" for t in tasks for m in (*t.metric_names, "loss")]
    if monitor not in valid:
        raise UserError(f"trainer.monitor={monitor} is not a validation metric; use one of {', '.join(valid)}")
    return monitor


def accumulation_plan(full_batches: int, accumulate: int) -> tuple[int, int]:
    """(micro-batches, optimizer updates) per epoch; a trailing incomplete accumulation cycle is dropped."""
    if accumulate < 1:
        raise UserError(f"trainer.accumulate_grad_batches must be >= 1 (got {accumulate})")
    if full_batches < accumulate:
        raise UserError(f"trainer.accumulate_grad_batches={accumulate} exceeds the {full_batches} batches of an "
                        "epoch; lower it or trainer.batch_size")
    updates = full_batches // accumulate
    return updates * accumulate, updates


def build_model(cfg: DictConfig, tasks: list[TaskSpec], rt: Runtime, fresh: bool) -> MultiTaskModel:
    encoder = build_encoder(cfg.encoder.arch)
    if cfg.encoder.init and fresh:
        load_encoder_init(encoder, cfg.encoder.arch, cfg.encoder.init)
    model = MultiTaskModel(encoder, tasks, head=instantiate(cfg.heads, "heads"))
    return model.to(rt.device, memory_format=rt.memory_format)


def load_model_state(model: MultiTaskModel, ckpt: dict) -> None:
    model.encoder.load_state_dict(ckpt["encoder"]["state"])
    model.heads.load_state_dict(ckpt["heads"])


def build_weighting(cfg: DictConfig, num_tasks: int, rt: Runtime) -> tuple[Weighting, GradientOptions]:
    """The method from ``weighting``, and the engine's options for it (the keys of ENGINE_KEYS)."""
    node = OmegaConf.masked_copy(cfg.weighting, [k for k in cfg.weighting if k not in ENGINE_KEYS])
    weighting = instantiate(node, "weighting", num_tasks=num_tasks)
    if not isinstance(weighting, Weighting):
        raise UserError(f"weighting._target_={cfg.weighting._target_} is not an mtlssl weighting method")
    options = GradientOptions(**{k: cfg.weighting[k] for k in ENGINE_KEYS if k in cfg.weighting})
    return weighting.to(rt.device), options


def run(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    rt = Runtime.create(cfg.device, cfg.precision, cfg.trainer.channels_last)
    check_trainer(cfg.trainer, min_epochs=1)
    out = RunDir(run_dir)
    resume = out.resume_state(cfg.resume, "mtl")
    out.check_unchanged(resume, cfg, ("optim._target_", "weighting._target_"))
    mode = cfg.encoder.mode
    if mode not in ENCODER_MODES:
        raise UserError(f"encoder.mode={mode} is not one of {', '.join(ENCODER_MODES)}")
    seed_everything(cfg.seed, cfg.trainer.deterministic)

    data = build_data(cfg.data)
    tasks = build_tasks(data.select(cfg.tasks))
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    model = build_model(cfg, [t.spec for t in tasks], rt, fresh=resume is None)
    weighting, grad_options = build_weighting(cfg, len(tasks), rt)
    augment = instantiate(cfg.augmentation, "augmentation").to(rt.device)
    frozen = mode == "frozen"
    set_trainable(model.encoder, not frozen)

    epochs, batch_size = cfg.trainer.epochs, cfg.trainer.batch_size
    accumulate = cfg.trainer.accumulate_grad_batches
    micro_batches, steps_per_epoch = accumulation_plan(train.steps_per_epoch(batch_size, "train"), accumulate)
    trainable = [(model.heads, 1.0), (weighting, 1.0)] + ([] if frozen else [(model.encoder, cfg.encoder.lr_mult)])
    optimizer = build_optimizer(cfg.optim, param_groups(trainable, cfg.optim.lr, cfg.optim.weight_decay))
    scheduler = instantiate(cfg.sched, "sched")(optimizer, total_steps=epochs * steps_per_epoch,
                                                steps_per_epoch=steps_per_epoch)
    scaler = grad_scaler(rt.device, rt.precision)
    monitor = check_monitor(cfg.trainer.monitor, tasks)
    start_epoch, step, history, best = 0, 0, [], {"epoch": 0, "value": math.nan}
    grad_sums: dict[str, float] = {}  # running sums of the logged weights and gradient stats
    guard = NonFiniteGuard(cfg.trainer.nonfinite, cfg.trainer.max_nonfinite_skips, last_good=out.last)
    position = None  # where in an epoch a resumed run continues (a checkpoint saved between epoch ends)
    if resume is not None:
        load_model_state(model, resume)
        weighting.load_state_dict(resume["weighting"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        scaler.load_state_dict(resume["scaler"])
        set_rng_state(resume["rng"])
        start_epoch, step, history, best = resume["epoch"], resume["step"], resume["history"], resume["best"]
        grad_sums, position = resume["grad_sums"], resume.get("position")
        guard.skipped = resume.get("nonfinite_skips", 0)
        log.info("resuming from %s at epoch %d, step %d", out.last, start_epoch, step)

    def checkpoint(epoch: int, metrics: dict[str, float], full: bool, position: dict | None = None) -> dict:
        state = {
            "kind": "mtl", "config": to_plain(cfg), "epoch": epoch, "step": step, "metrics": metrics,
            "tasks": [t.spec.as_dict() for t in tasks],
            "encoder": {"arch": to_plain(cfg.encoder.arch), "state": model.encoder.state_dict()},
            "heads": model.heads.state_dict(), "weighting": weighting.state_dict(),
        }
        if full:
            state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         scaler=scaler.state_dict(), rng=rng_state(), history=history, best=best,
                         grad_sums=grad_sums, position=position, nonfinite_skips=guard.skipped)
        return state

    layout = {"seed": cfg.seed, "trainer.batch_size": batch_size, "trainer.accumulate_grad_batches": accumulate,
              "batches_per_epoch": micro_batches}
    check_layout(position, layout)
    names = [t.name for t in tasks]
    grad_groups = {**{f"the head of task {n}": h for n, h in model.heads.items()}, "the shared encoder": model.encoder,
                   "the weighting's parameters": weighting}
    save_every = cfg.trainer.checkpoint_every_steps
    out.prepare(cfg)  # only now: a relaunch refused above has written nothing
    tb = TensorBoard(out.tensorboard, purge_step=step + 1 if resume is not None else None)
    log.info("training %d tasks (%s) with %s weighting, encoder %s (%s%s) on %d images for %d epochs on %s",
             len(tasks), ", ".join(t.name for t in tasks), type(weighting).__name__, cfg.encoder.name, mode,
             f", lr x{cfg.encoder.lr_mult}" if not frozen and cfg.encoder.lr_mult != 1 else "",
             len(train), epochs, rt)
    with progress() as bar, PreemptionGuard() as preemption:
        for epoch in range(start_epoch, epochs):
            model.train()
            if frozen:  # a frozen encoder keeps its BatchNorm statistics too
                model.encoder.eval()
            shuffle = generator(cfg.seed, SHUFFLE, epoch)
            aug_gen = generator(cfg.seed, AUGMENT, epoch, device=rt.device)
            weighting.generator = generator(cfg.seed, WEIGHTING, epoch, device=rt.device)
            # Resumed mid-epoch: the same batches and random draws, from where it stopped.
            first, counted, loss_sum = resume_epoch(position, torch.zeros(len(tasks), device=rt.device), aug_gen,
                                                   weighting.generator)
            position = None
            task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=micro_batches, completed=first, rate="")
            seen, tic, last_jacobian, cycle_ok = 0, time.perf_counter(), None, True
            batches = train.batches(batch_size, shuffle=True, generator=shuffle, drop_last=True, skip=first)
            for i, (images, targets) in enumerate(itertools.islice(batches, micro_batches - first), start=first):
                x = augment(images.to(rt.device, non_blocking=True), aug_gen).contiguous(memory_format=rt.memory_format)
                targets = {k: v.to(rt.device, non_blocking=True) for k, v in targets.items()}
                with autocast(rt.device, rt.precision):
                    with torch.set_grad_enabled(not frozen):
                        features = model.encoder(x)
                    losses = task_losses(tasks, model.forward_heads(features), targets).float()
                if i % accumulate == 0:
                    optimizer.zero_grad(set_to_none=True)
                    cycle_ok = True
                # A non-finite loss never reaches a backward pass or the weighting method: its cycle is dropped.
                cycle_ok = cycle_ok and guard.losses_ok(losses, names, epoch, step)
                updating = (i + 1) % accumulate == 0  # the last micro-batch of an accumulation cycle
                log_now = updating and cycle_ok and (step + 1) % cfg.trainer.log_every == 0
                if cycle_ok:
                    jac = mtl_backward(model, features, losses, weighting, grad_options, scaler,
                                       want_jacobian=log_now and cfg.trainer.log_grad_stats, grad_scale=1 / accumulate)
                    loss_sum += losses.detach()
                    counted += 1
                seen += images.shape[0]
                stepped = updating and cycle_ok and (scaler.is_enabled() or guard.grads_ok(grad_groups, epoch, step))
                if stepped:  # (fp16 overflow is the grad scaler's: it skips that step itself)
                    apply_gradients(optimizer, scheduler, scaler, cfg.trainer.grad_clip)
                    if weighting.needs_post_step_losses:  # e.g. FAMO: the same batch under the updated model
                        with torch.no_grad(), autocast(rt.device, rt.precision):
                            weighting.step_end(task_losses(tasks, model(x)[1], targets).float())
                    step += 1
                    if log_now:
                        for key, value in log_step(tb, tasks, losses.detach(), weighting, jac, current_lr(optimizer),
                                                   step).items():
                            grad_sums[key] = grad_sums.get(key, 0.0) + value
                        grad_sums["logged_steps"] = grad_sums.get("logged_steps", 0.0) + 1
                        if jac is not None:
                            last_jacobian = jac
                bar.update(task, advance=1, rate=f"{seen / (time.perf_counter() - tic):,.0f} img/s")
                # Between epoch ends only: the last step's state is saved whole by the epoch end below.
                if updating and i + 1 < micro_batches and (preemption.requested
                                                           or periodic_save(save_every, stepped, step)):
                    here = epoch_position(i + 1, layout, loss_sum, counted, aug_gen, weighting.generator)
                    save_checkpoint(checkpoint(epoch, history[-1] if history else {}, True, here), out.last)
                    if preemption.requested:
                        preemption.stop(out.last, f"epoch {epoch + 1}, step {step}")
            bar.remove_task(task)
            seconds = time.perf_counter() - tic
            weighting.epoch_end(loss_sum / max(counted, 1))
            if last_jacobian is not None:
                tb.image("grad/cosines", cosine_heatmap(last_jacobian), step)
            metrics = score_tasks(model, tasks, val, cfg.trainer.eval_batch_size, rt, "val")
            epoch_losses = (loss_sum / max(counted, 1)).tolist()
            metrics.update({f"train/{t.name}/epoch_loss": v for t, v in zip(tasks, epoch_losses, strict=True)})
            metrics["images_per_s"] = seen / seconds
            if guard.skipped:
                metrics["nonfinite_skips"] = guard.skipped
            history.append({"epoch": epoch + 1, **metrics})
            tb.scalars(metrics, step)  # one x-axis (the global step) for every curve
            improved = best["epoch"] == 0 or is_better(monitor, metrics[monitor], best["value"])
            if improved:
                best = {"epoch": epoch + 1, "value": metrics[monitor]}
                save_checkpoint(checkpoint(epoch + 1, metrics, full=False), out.best)
            log.info("epoch %d/%d  train loss %s  %s %.4f%s  (%.1fs, %.0f img/s)", epoch + 1, epochs,
                     " ".join(f"{v:.3f}" for v in epoch_losses), monitor,
                     metrics[monitor], "  *best*" if improved else "", seconds, metrics["images_per_s"])
            save_checkpoint(checkpoint(epoch + 1, metrics, full=True), out.last)
            if preemption.requested:  # signalled during validation: the epoch is saved whole
                preemption.stop(out.last, f"the end of epoch {epoch + 1}")

    best_state = load_checkpoint(out.best, "best checkpoint", kinds=("mtl",))
    load_model_state(model, best_state)
    results = {**{k: v for k, v in best_state["metrics"].items() if k.startswith("val/")},
               **score_tasks(model, tasks, test, cfg.trainer.eval_batch_size, rt, "test"), "best_epoch": best["epoch"]}
    tb.hparams(flatten(to_plain(cfg)), results)
    tb.close()
    logged = grad_sums.get("logged_steps", 0.0)
    gradient_summary = {k: v / logged for k, v in grad_sums.items() if k != "logged_steps"} if logged else {}
    write_metrics(out.path, {"stage": "train_mtl", "monitor": monitor, **results, "history": history,
                             "gradient_summary": gradient_summary, "gradient_summary_steps": int(logged)})
    console.print(metrics_table(f"train-mtl: best epoch {best['epoch']} by {monitor}",
                                {k: v for k, v in results.items() if k.startswith("test/")}))
    return results


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train_mtl")
def main(cfg: DictConfig) -> float | None:
    return run_stage(run, cfg)  # the objective, for a sweeper (objective=<metric>)


if __name__ == "__main__":
    main()
