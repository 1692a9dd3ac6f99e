"""The train state and the checkpoint format it owns (format version 2).

One checkpoint is one dict, written atomically and read with ``torch.load(weights_only=True)`` only:

    format_version  2
    kind            "pretrain" | "mtl" (the stage that wrote it)
    config          the run's resolved config (plain data)
    model           {"spec": <plain data that rebuilds the architecture>, "state": <its state_dict>}
    tasks           the task specs (the model spec's, repeated for quick reading)
    extras          {name: state_dict} of the other trained modules: "weighting", "ssl"
    epoch, step     where the weights stand (epochs finished, optimizer updates taken)
    metrics         the scores the run recorded with these weights
    train           (``last.pt`` only) what resuming needs: optimizer, scheduler, scaler, rng, position
                    (inside an epoch), history, best, nonfinite_skips, grad_sums
    lineage         the checkpoints this model was initialised from, oldest first

``build_model(ckpt["model"]["spec"])`` rebuilds the model with no config (``mtlssl.api.load``). Files of
format 1 (mtlssl before architecture v2) are upgraded on reading, so eval, encoder.init and resume keep
working with them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from mtlssl.engine.rng import rng_state, set_rng_state
from mtlssl.errors import UserError
from mtlssl.io import atomic_open, load_weights_only, resolve_checkpoint, unusable_fix
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.models.backbones import resnet, small_cnn
from mtlssl.models.backbones.build import backbone_architecture
from mtlssl.models.build import build_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
KINDS = ("pretrain", "mtl")
WRITTEN_BY = {"pretrain": "mtlssl pretrain", "mtl": "mtlssl train-mtl"}


@dataclass
class TrainState:
    """Everything a run trains and where it stands: what a checkpoint holds.

    ``extras`` are the trained modules besides the model (the weighting method, an SSL objective's
    projector); ``history``, ``best``, ``position``, ``nonfinite_skips`` and ``grad_sums`` are the loop's.
    """

    kind: str
    config: dict[str, Any]
    model: MultiTaskArchitecture
    extras: dict[str, nn.Module]
    optimizer: Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    epoch: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    position: dict[str, Any] | None = None
    nonfinite_skips: int = 0
    grad_sums: dict[str, float] = field(default_factory=dict)
    lineage: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None  # the checkpoint ``restore`` continued from

    def checkpoint(self, metrics: Mapping[str, Any], full: bool) -> dict[str, Any]:
        """The checkpoint of the current weights; ``full`` adds what resuming needs (``last.pt``)."""
        ckpt: dict[str, Any] = {
            "format_version": FORMAT_VERSION, "kind": self.kind, "config": self.config,
            "model": {"spec": self.model.spec(), "state": self.model.state_dict()},
            "tasks": [t.as_dict() for t in self.model.tasks],
            "extras": {name: module.state_dict() for name, module in self.extras.items()},
            "epoch": self.epoch, "step": self.step, "metrics": dict(metrics), "lineage": self.lineage,
        }
        if full:
            ckpt["train"] = {
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "rng": rng_state(), "position": self.position,
                "history": self.history, "best": self.best, "nonfinite_skips": self.nonfinite_skips,
                "grad_sums": self.grad_sums,
            }
        return ckpt

    def save(self, path: Path, metrics: Mapping[str, Any], full: bool) -> None:
        write_checkpoint(self.checkpoint(metrics, full), path)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a full checkpoint (``last.pt``) of the same run: every state and counter. The model must
        be the one the run was trained with (settings that change no weight shape, e.g. a stride, included)."""
        self.model.load_state_dict(ckpt["model"]["state"])  # first: a weight of another shape has its own message
        check_same_model(ckpt, self.model.spec())
        for name, module in self.extras.items():
            module.load_state_dict(ckpt["extras"][name])
        train = ckpt["train"]
        self.optimizer.load_state_dict(train["optimizer"])
        self.scheduler.load_state_dict(train["scheduler"])
        self.scaler.load_state_dict(train["scaler"])
        set_rng_state(train["rng"])
        self.epoch, self.step, self.lineage = ckpt["epoch"], ckpt["step"], ckpt.get("lineage", [])
        self.history, self.best, self.position = train["history"], train["best"], train["position"]
        self.nonfinite_skips, self.grad_sums = train["nonfinite_skips"], train["grad_sums"]
        self.resumed_from = ckpt["path"]
        log.info("resuming from %s at epoch %d, step %d", ckpt["path"], self.epoch, self.step)


def write_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file, fsync, then rename: a reader never sees a half-written file and the previous
    checkpoint stays valid until the new one is complete."""
    with atomic_open(path) as f:
        torch.save(ckpt, f)


def _kind_fix(what: str, kinds: tuple[str, ...]) -> str:
    if what == "resume":  # the run directory itself holds another stage's run
        return "this run directory belongs to another stage: run this one in a new hydra.run.dir"
    return f"give a run directory or .pt written by {' or '.join(WRITTEN_BY[k] for k in kinds)}"


def read_checkpoint(path: str | Path, what: str, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Load, check and (from format 1) upgrade a checkpoint; ``ckpt["path"]`` is the file read. ``what`` names
    the config key, for the error messages."""
    p = resolve_checkpoint(path, what)
    ckpt = load_weights_only(p, what)
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS:
        raise UserError(f"{what}: '{p}' is not an mtlssl checkpoint (no 'kind'); {unusable_fix(what)}")
    version = ckpt.get("format_version", 0)
    if version > FORMAT_VERSION:
        raise UserError(f"{what}: '{p}' has format version {version}, newer than this mtlssl reads "
                        f"({FORMAT_VERSION}); upgrade mtlssl")
    if ckpt["kind"] not in kinds:
        # The wording up to "needed here" is matched by tests (and the run-dir guard repeats it): keep it.
        raise UserError(f"{what}: '{p}' is a {ckpt['kind']} checkpoint, but a {' or '.join(kinds)} "
                        f"checkpoint is needed here; {_kind_fix(what, kinds)}")
    if version < FORMAT_VERSION:
        ckpt = upgrade_v1(ckpt)
    ckpt["path"] = str(p)
    return ckpt


def _architecture(spec: dict[str, Any]) -> dict[str, Any]:
    """What decides a model's computation (the normalisation does not: it may follow the data's statistics)."""
    return {**spec, "backbone": backbone_architecture(spec["backbone"])}


def check_same_model(ckpt: dict[str, Any], spec: dict[str, Any]) -> None:
    """Refuse to continue a run with another model than the one its checkpoint holds."""
    saved, wanted = _architecture(ckpt["model"]["spec"]), _architecture(spec)
    if saved != wanted:
        parts = [k for k in saved if saved[k] != wanted.get(k)]
        detail = "; ".join(f"{k}: {saved[k]} there, {wanted.get(k)} here" for k in parts)
        raise UserError(f"'{ckpt['path']}' holds another model than this launch builds ({detail}); relaunch with the "
                        "settings it was trained with (that run's resolved_config.yaml: encoder, arch, heads, tasks), "
                        "or use a new hydra.run.dir")


def rebuild_model(ckpt: dict[str, Any]) -> MultiTaskArchitecture:
    """The checkpoint's model, rebuilt from its spec and loaded with its weights."""
    model = build_model(ckpt["model"]["spec"])
    model.load_state_dict(ckpt["model"]["state"])
    return model


def init_backbone(model: MultiTaskArchitecture, init: str) -> dict[str, Any]:
    """Copy the backbone weights of checkpoint ``init`` (any kind, any format) into ``model`` (``encoder.init``);
    returns the checkpoint's lineage entry, for the new run's ``lineage``."""
    ckpt = read_checkpoint(init, "encoder.init")
    saved = backbone_architecture(ckpt["model"]["spec"]["backbone"])
    wanted = backbone_architecture(model.spec()["backbone"])
    if saved != wanted:
        raise UserError(
            f"encoder mismatch: checkpoint '{ckpt['path']}' holds encoder {saved}, but the config asks for "
            f"{wanted}; choose the matching encoder (e.g. encoder={ckpt['config']['encoder']['name']}) "
            "with the same settings"
        )
    state = {k.removeprefix("backbone."): v for k, v in ckpt["model"]["state"].items() if k.startswith("backbone.")}
    try:
        model.backbone.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"encoder.init: weights in '{ckpt['path']}' do not fit the encoder: {err}") from err
    log.info("encoder initialised from %s checkpoint %s (epoch %s)", ckpt["kind"], ckpt["path"], ckpt.get("epoch"))
    planned = (ckpt.get("config") or {}).get("trainer", {}).get("epochs")
    unfinished = (ckpt.get("train") or {}).get("position") is not None
    if unfinished or (planned is not None and ckpt.get("epoch", 0) < planned):
        log.warning("%s is from an unfinished run (epoch %s of %s%s): relaunch that run to finish it first, "
                    "unless this is what you want", ckpt["path"], ckpt.get("epoch"), planned,
                    ", stopped mid-epoch" if unfinished else "")
    return {"path": ckpt["path"], "kind": ckpt["kind"], "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
            "lineage": ckpt.get("lineage", [])}


# --- format 1 (mtlssl before architecture v2) -------------------------------------------------------------------

# Format-1 module paths -> today's, and how each backbone's weights were named then.
V1_TARGETS = {"mtlssl.encoders.small_cnn.": "mtlssl.models.backbones.small_cnn.",
              "mtlssl.encoders.resnet.": "mtlssl.models.backbones.resnet.", "mtlssl.heads.": "mtlssl.models.heads."}
V1_BACKBONE_KEYS: dict[str, Callable[[str], str]] = {"mtlssl.models.backbones.small_cnn.small_cnn": small_cnn.v1_key,
                                                     "mtlssl.models.backbones.resnet.resnet": resnet.v1_key}


def _v1_targets(node: Any) -> Any:
    """A format-1 config with its ``_target_`` module paths moved to where the code lives now."""
    if isinstance(node, dict):
        return {k: _v1_targets(v) if k != "_target_" else _v1_target(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_v1_targets(v) for v in node]
    return node


def _v1_target(target: Any) -> Any:
    for old, new in V1_TARGETS.items():
        if isinstance(target, str) and target.startswith(old):
            return new + target.removeprefix(old)
    return target


def upgrade_v1(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint as a format-2 one: the same weights and states under today's names."""
    config = _v1_targets(ckpt.get("config") or {})
    backbone = _v1_targets(ckpt["encoder"]["arch"])
    if backbone.get("_target_") == "mtlssl.models.backbones.small_cnn.small_cnn":  # format 1's only stem
        backbone.setdefault("stem_stride", 1)
        config.get("encoder", {}).get("arch", {}).setdefault("stem_stride", 1)
    key = V1_BACKBONE_KEYS.get(backbone.get("_target_"))
    if key is None:
        raise UserError(f"checkpoint of format 1 with an unknown encoder {backbone.get('_target_')}; it cannot be read")
    state = {f"backbone.{key(k)}": v for k, v in ckpt["encoder"]["state"].items()}
    mtl = ckpt["kind"] == "mtl"
    state.update({f"heads.{k}": v for k, v in ckpt.get("heads", {}).items()})
    spec = {"arch": "hps", "backbone": backbone, "head": config.get("heads") if mtl else None,
            "tasks": ckpt.get("tasks", [])}
    upgraded = {
        "format_version": FORMAT_VERSION, "kind": ckpt["kind"], "config": config,
        "model": {"spec": spec, "state": state}, "tasks": spec["tasks"],
        "extras": {"weighting": ckpt["weighting"]} if mtl else {"ssl": ckpt["ssl"]},
        "epoch": ckpt.get("epoch", 0), "step": ckpt.get("step", 0), "metrics": ckpt.get("metrics", {}),
        "lineage": [], "upgraded_from": 1,
    }
    if "optimizer" in ckpt:  # a full checkpoint (last.pt)
        upgraded["train"] = {
            "optimizer": ckpt["optimizer"], "scheduler": ckpt["scheduler"], "scaler": ckpt["scaler"],
            "rng": ckpt["rng"], "position": _v1_position(ckpt.get("position"), config), "history": ckpt["history"],
            "best": ckpt.get("best", {"epoch": 0, "value": math.nan}) if mtl else None,
            "nonfinite_skips": ckpt.get("nonfinite_skips", 0), "grad_sums": ckpt.get("grad_sums", {}),
        }
    return upgraded


def _v1_position(position: dict[str, Any] | None, config: dict[str, Any]) -> dict[str, Any] | None:
    """Format 1's place inside an epoch: its generators as a list (augment[, weighting]) and, for pretrain, no
    accumulation in the batch layout."""
    if position is None:
        return None
    mtl = "pretrain_split" not in config
    names = ("augment/train", "weighting") if mtl else (f"augment/{config['pretrain_split']}",)
    layout = dict(position["layout"])
    if not mtl:
        layout = {"seed": layout["seed"], "trainer.batch_size": layout["trainer.batch_size"],
                  "trainer.accumulate_grad_batches": 1, "batches_per_epoch": layout["batches_per_epoch"]}
    return {**position, "layout": layout, "generators": dict(zip(names, position["generators"], strict=True))}
