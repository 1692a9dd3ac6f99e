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

``read_checkpoint`` checks a file before anything uses it (``checkpoint_problem``): every field above of the
right type (``train`` where resuming needs it), a model spec that names only registered code (the architecture,
the backbone and head builders of mtlssl.builders, known task kinds) and weights that are finite tensors. A file
that fails is one UserError naming the file and the field, never a KeyError deep in a stage.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from mtlssl.config import checked
from mtlssl.engine.rng import rng_state, set_rng_state
from mtlssl.errors import UserError
from mtlssl.io import atomic_open, load_weights_only, resolve_checkpoint, state_mismatch, unusable_fix
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.models.backbones import resnet, small_cnn
from mtlssl.models.backbones.build import backbone_architecture
from mtlssl.models.build import ARCHITECTURES, build_model
from mtlssl.tasks import TaskSpec

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
        with _loading(ckpt, "model.state"):  # first: a weight of another shape has its own message
            self.model.load_state_dict(ckpt["model"]["state"])
        check_same_model(ckpt, self.model.spec())
        for name, module in self.extras.items():
            if name not in ckpt["extras"]:
                raise UserError(f"resume: '{ckpt['path']}' holds no {name} state (extras.{name}); "
                                f"{unusable_fix('resume')}")
            with _loading(ckpt, f"extras.{name}"):
                module.load_state_dict(ckpt["extras"][name])
        train = ckpt["train"]
        for name, part in (("optimizer", self.optimizer), ("scheduler", self.scheduler), ("scaler", self.scaler)):
            with _loading(ckpt, f"train.{name}"):
                part.load_state_dict(train[name])
        with _loading(ckpt, "train.rng"):
            set_rng_state(train["rng"])
        self.epoch, self.step, self.lineage = ckpt["epoch"], ckpt["step"], ckpt.get("lineage", [])
        self.history, self.best, self.position = train["history"], train["best"], train["position"]
        self.nonfinite_skips, self.grad_sums = train["nonfinite_skips"], train["grad_sums"]
        self.resumed_from = ckpt["path"]
        log.info("resuming from %s at epoch %d, step %d", ckpt["path"], self.epoch, self.step)


@contextlib.contextmanager
def _loading(ckpt: dict[str, Any], part: str) -> Iterator[None]:
    """A state of the right type that still does not load (torch's own checks) is a UserError naming the file."""
    try:
        yield
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UserError(f"resume: {part} in '{ckpt['path']}' does not load into this run ({type(err).__name__}: "
                        f"{first}); {unusable_fix('resume')}") from err


def write_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file, fsync, then rename: a reader never sees a half-written file and the previous
    checkpoint stays valid until the new one is complete."""
    with atomic_open(path) as f:
        torch.save(ckpt, f)


def _kind_fix(what: str, kinds: tuple[str, ...]) -> str:
    if what == "resume":  # the run directory itself holds another stage's run
        return "this run directory belongs to another stage: run this one in a new hydra.run.dir"
    return f"give a run directory or .pt written by {' or '.join(WRITTEN_BY[k] for k in kinds)}"


def read_checkpoint(path: str | Path, what: str, kinds: tuple[str, ...] = KINDS, full: bool = False) -> dict[str, Any]:
    """Load, check and (from format 1) upgrade a checkpoint; ``ckpt["path"]`` is the file read. ``what`` names
    the config key, for the error messages; ``full``: resuming needs the ``train`` states too."""
    p = resolve_checkpoint(path, what)
    ckpt = load_weights_only(p, what)
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS:
        raise UserError(f"{what}: '{p}' is not an mtlssl checkpoint (no 'kind'); {unusable_fix(what)}")
    version = ckpt.get("format_version", 0)
    if not _is_int(version):
        _refuse(p, what, f"format_version is {_kind_of(version)}, not an integer")
    if version > FORMAT_VERSION:
        raise UserError(f"{what}: '{p}' has format version {version}, newer than this mtlssl reads "
                        f"({FORMAT_VERSION}); upgrade mtlssl")
    if ckpt["kind"] not in kinds:
        # The wording up to "needed here" is matched by tests (and the run-dir guard repeats it): keep it.
        raise UserError(f"{what}: '{p}' is a {ckpt['kind']} checkpoint, but a {' or '.join(kinds)} "
                        f"checkpoint is needed here; {_kind_fix(what, kinds)}")
    if version < FORMAT_VERSION:
        problem = v1_problem(ckpt)
        if problem:
            _refuse(p, what, f"{problem} (a checkpoint of format 1)")
        try:
            ckpt = upgrade_v1(ckpt)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as err:  # deeper fields, e.g. position
            _refuse(p, what, f"its format-1 fields do not upgrade ({type(err).__name__}: {err})")
    problem = checkpoint_problem(ckpt, full)
    if problem:
        _refuse(p, what, problem)
    ckpt["path"] = str(p)
    return ckpt


def _refuse(path: Path, what: str, problem: str) -> None:
    raise UserError(f"{what}: '{path}' is not a usable mtlssl checkpoint: {problem}; {unusable_fix(what)}")


# --- what a checkpoint must hold -----------------------------------------------------------------------------

Kinds = tuple[type | None, ...]  # the types a field may have; None: it may be null

MAPPING, LIST, INTEGER, TEXT = (dict,), (list,), (int,), (str,)
FIELDS: dict[str, Kinds] = {"config": MAPPING, "model": MAPPING, "tasks": LIST, "extras": MAPPING, "epoch": INTEGER,
                            "step": INTEGER, "metrics": MAPPING, "lineage": LIST}
TRAIN_FIELDS: dict[str, Kinds] = {"optimizer": MAPPING, "scheduler": MAPPING, "scaler": MAPPING, "rng": MAPPING,
                                  "position": (dict, None), "history": LIST, "best": (dict, None),
                                  "nonfinite_skips": INTEGER, "grad_sums": MAPPING}
# inside an epoch (mtlssl.engine.preemption.epoch_position), and the best epoch so far
POSITION_FIELDS: dict[str, Kinds] = {"batch": INTEGER, "layout": MAPPING, "loss_sum": (torch.Tensor,),
                                     "counted": INTEGER, "generators": MAPPING}
BEST_FIELDS: dict[str, Kinds] = {"epoch": INTEGER, "value": (float, int)}
SPEC_FIELDS: dict[str, Kinds] = {"arch": TEXT, "backbone": MAPPING, "head": (dict, None), "tasks": LIST}
V1_FIELDS: dict[str, Kinds] = {"encoder": MAPPING, "config": (dict, None), "heads": MAPPING, "tasks": LIST}
V1_TRAIN_FIELDS = ("scheduler", "scaler", "rng", "history")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind_of(value: Any) -> str:
    names = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _fits(value: Any, kinds: Kinds) -> bool:
    return any(value is None if k is None else _is_int(value) if k is int else isinstance(value, k) for k in kinds)


def _fields_problem(node: dict[str, Any], fields: dict[str, Kinds], prefix: str = "",
                    optional: tuple[str, ...] = ()) -> str | None:
    """The first field of ``node`` that is missing (unless ``optional``) or of a type not in its kinds."""
    for name, kinds in fields.items():
        if name not in node:
            if name in optional:
                continue
            return f"{prefix}{name} is missing"
        if not _fits(node[name], kinds):
            wanted = " or ".join("null" if k is None else _kind_of(k()) for k in kinds)
            return f"{prefix}{name} is {_kind_of(node[name])}, not {wanted}"
    return None


def checkpoint_problem(ckpt: dict[str, Any], full: bool = False) -> str | None:
    """What is wrong with a format-2 checkpoint's structure or weights, or None when every use can trust it.
    ``full``: the ``train`` states that resuming needs must be there too."""
    problem = _fields_problem(ckpt, FIELDS)
    if problem:
        return problem
    if full or ckpt.get("train") is not None:
        train = ckpt.get("train")
        if not isinstance(train, dict):
            return ("train (what resuming needs) is missing: this is not a run's last.pt" if train is None else
                    f"train is {_kind_of(train)}, not a mapping")
        problem = _train_problem(train)
        if problem:
            return problem
    bad = [name for name, state in ckpt["extras"].items() if not isinstance(state, dict)]
    if bad:
        return f"extras.{bad[0]} is {_kind_of(ckpt['extras'][bad[0]])}, not a mapping (a module's state)"
    if not all(isinstance(t, dict) for t in ckpt["tasks"]):
        return "tasks holds an entry that is not a mapping (a task spec)"
    return model_problem(ckpt["model"])


def _train_problem(train: dict[str, Any]) -> str | None:
    """The loop's own records in ``train``: where it stood inside an epoch, the per-epoch history, the best epoch."""
    position, best = train.get("position"), train.get("best")
    problem = (_fields_problem(train, TRAIN_FIELDS, "train.")
               or (_fields_problem(position, POSITION_FIELDS, "train.position.") if position is not None else None)
               or (_fields_problem(best, BEST_FIELDS, "train.best.") if best is not None else None))
    if problem:
        return problem
    if not all(isinstance(record, dict) for record in train["history"]):
        return "train.history holds an entry that is not a mapping (an epoch's record)"
    if position is not None and not all(isinstance(g, torch.Tensor) for g in position["generators"].values()):
        return "train.position.generators holds a state that is not a tensor"
    return None


def model_problem(model: dict[str, Any]) -> str | None:
    """What is wrong with a stored model (``{"spec", "state"}``), or None: a spec that builds only registered
    code, and a state of finite tensors. Checked before ``build_model`` sees the spec (``mtlssl.api.load`` of an
    export checks its ``model.json`` and weights the same way)."""
    problem = _fields_problem(model, {"spec": MAPPING, "state": MAPPING}, "model.")
    return problem or spec_problem(model["spec"]) or state_problem(model["state"])


def spec_problem(spec: dict[str, Any]) -> str | None:
    problem = _fields_problem(spec, SPEC_FIELDS, "model.spec.")
    if problem:
        return problem
    if spec["arch"] not in ARCHITECTURES:
        return f"model.spec.arch={spec['arch']} is not an architecture of this mtlssl ({', '.join(ARCHITECTURES)})"
    if spec["tasks"] and spec["head"] is None:
        return "model.spec has tasks but no head"
    for key, group in (("backbone", "encoder.arch"), ("head", "heads")):
        if spec[key] is not None:
            try:
                checked(spec[key], group, key=f"model.spec.{key}")
            except UserError as err:
                return str(err)
    for i, task in enumerate(spec["tasks"]):
        if not isinstance(task, dict):
            return f"model.spec.tasks[{i}] is {_kind_of(task)}, not a mapping (a task spec)"
        try:
            TaskSpec(**task)
        except (TypeError, UserError) as err:  # an unknown or missing field, an unknown kind, a bad size
            return f"model.spec.tasks[{i}]={task} is not a task spec ({err})"
    return None


def state_problem(state: dict[str, Any]) -> str | None:
    """Weights that are not dense tensors, or floating-point ones that hold NaN or infinity."""
    bad = [k for k, v in state.items() if not (isinstance(v, torch.Tensor) and v.layout == torch.strided)]
    if bad:
        return f"model.state[{bad[0]!r}] is {_kind_of(state[bad[0]])}, not a dense tensor"
    nonfinite = [k for k, v in state.items() if (v.is_floating_point() or v.is_complex()) and not v.isfinite().all()]
    if nonfinite:
        more = f" (+{len(nonfinite) - 1} more)" if len(nonfinite) > 1 else ""
        return (f"its weights hold NaN or infinite values ({nonfinite[0]}{more}): the run that wrote it diverged. "
                "Use an earlier checkpoint of that run, or rerun it (e.g. with a lower optim.lr or trainer.grad_clip)")
    return None


def v1_problem(ckpt: dict[str, Any]) -> str | None:
    """What format-1 fields ``upgrade_v1`` needs are missing or of the wrong type (no format_version reads as 1)."""
    if "encoder" not in ckpt and "model" in ckpt:
        return "format_version is missing (a format-2 checkpoint records it)"
    extras = {"weighting": MAPPING} if ckpt["kind"] == "mtl" else {"ssl": MAPPING}
    optional = ("config", "heads", "tasks")
    problem = (_fields_problem(ckpt, {**V1_FIELDS, **extras}, optional=optional)
               or _fields_problem(ckpt["encoder"], {"arch": MAPPING, "state": MAPPING}, "encoder."))
    if problem or "optimizer" not in ckpt:
        return problem
    missing = [name for name in V1_TRAIN_FIELDS if name not in ckpt]
    return f"{missing[0]} is missing (a full checkpoint, with an optimizer, has it)" if missing else None


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
    try:
        model = build_model(ckpt["model"]["spec"])
    except UserError as err:  # e.g. a builder's argument it does not take
        raise UserError(f"'{ckpt['path']}': its model spec does not build: {err}") from err
    problem = state_mismatch(model, ckpt["model"]["state"])
    if problem:
        raise UserError(f"'{ckpt['path']}' is not a usable mtlssl checkpoint: its weights do not fit its own model "
                        f"spec ({problem}); point at an intact mtlssl checkpoint")
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
            f"{wanted}; choose the matching encoder (e.g. encoder={_stored(ckpt, 'encoder', 'name')}) "
            "with the same settings"
        )
    state = {k.removeprefix("backbone."): v for k, v in ckpt["model"]["state"].items() if k.startswith("backbone.")}
    try:
        model.backbone.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"encoder.init: weights in '{ckpt['path']}' do not fit the encoder: {err}") from err
    log.info("encoder initialised from %s checkpoint %s (epoch %s)", ckpt["kind"], ckpt["path"], ckpt.get("epoch"))
    planned = _stored(ckpt, "trainer", "epochs")
    planned = planned if _is_int(planned) else None
    unfinished = (ckpt.get("train") or {}).get("position") is not None
    if unfinished or (planned is not None and ckpt.get("epoch", 0) < planned):
        log.warning("%s is from an unfinished run (epoch %s of %s%s): relaunch that run to finish it first, "
                    "unless this is what you want", ckpt["path"], ckpt.get("epoch"), planned,
                    ", stopped mid-epoch" if unfinished else "")
    return {"path": ckpt["path"], "kind": ckpt["kind"], "epoch": ckpt.get("epoch"), "step": ckpt.get("step"),
            "lineage": ckpt.get("lineage", [])}


def _stored(ckpt: dict[str, Any], *keys: str) -> Any:
    """A value of the checkpoint's stored config (``config.<keys>``), or None where it has none."""
    node: Any = ckpt["config"]
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


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
