"""Use a trained model from Python, and export it as safetensors.

    >>> from mtlssl.api import load
    >>> model = load("outputs/train_mtl/<date>/<time>")   # a run directory, a .pt file or an export directory
    >>> model.predict(images)                              # {task: class probabilities, label probabilities or values}

``load`` rebuilds the model from the checkpoint alone (its spec and weights; no config, no data), in eval mode.
``export`` writes ``encoder.safetensors`` (the backbone; for torchvision backbones under torchvision's own key
names, so ``torchvision.models.resnet18()`` loads it with ``strict=True`` once its ``fc`` is replaced) and
``model.safetensors`` with ``model.json`` (the whole multi-task model, which ``load`` reads back).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from mtlssl.engine.state import model_problem, read_checkpoint, rebuild_model
from mtlssl.errors import UserError
from mtlssl.io import state_mismatch, write_atomic
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.models.build import build_model
from mtlssl.tasks import Task, build_tasks

ENCODER_FILE, MODEL_FILE, SPEC_FILE = "encoder.safetensors", "model.safetensors", "model.json"


@dataclass
class TrainedModel:
    """A trained model with its tasks, ready to predict on a batch of images."""

    model: MultiTaskArchitecture
    tasks: list[Task]
    source: str
    info: dict[str, Any] = field(default_factory=dict)  # kind, epoch, step, metrics of the checkpoint

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _images(self, images: Tensor) -> Tensor:
        """uint8 [B, C, H, W] in 0..255, or float in [0, 1] -> float [0, 1] on the model's device."""
        if images.ndim != 4:
            raise ValueError(f"images must be a batch [B, C, H, W], got shape {tuple(images.shape)}")
        x = images.to(self.device)
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

    @torch.no_grad()
    def predict(self, images: Tensor) -> dict[str, Tensor]:
        """Each task's prediction for the batch: class probabilities, label probabilities or values."""
        output = self.model(self._images(images))
        return {task.name: task.predict(output.outputs[task.name]) for task in self.tasks}

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        """The shared representation [B, D] of the batch (what a pretrain checkpoint is for)."""
        return self.model(self._images(images), tasks=()).shared


def load(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model of a run directory (its best.pt, else last.pt), a checkpoint file or an ``export`` directory."""
    where = Path(path).expanduser()
    if (where / MODEL_FILE).is_file() and (where / SPEC_FILE).is_file():
        spec, state = read_export(where)
        model = build_model(spec["model"])
        problem = state_mismatch(model, state)
        if problem:
            raise UserError(f"path: the weights in '{where / MODEL_FILE}' do not fit its {SPEC_FILE} ({problem}); "
                            "export the checkpoint again (mtlssl export)")
        model.load_state_dict(state)
        info = {k: v for k, v in spec.items() if k != "model"}
    else:
        ckpt = read_checkpoint(where, "path")
        model, info = rebuild_model(ckpt), {k: ckpt.get(k) for k in ("kind", "epoch", "step", "metrics")}
    return TrainedModel(model.to(device).eval(), build_tasks(model.tasks), str(where), info)


def read_export(where: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """An export directory's ``model.json`` and weights, checked as a checkpoint's model is (a spec that builds
    only registered code, finite weights) before anything is built from them."""
    try:
        spec = json.loads((where / SPEC_FILE).read_text())
        state = load_file(where / MODEL_FILE)
    except (OSError, ValueError, SafetensorError) as err:  # unreadable, not JSON, not safetensors
        raise UserError(f"path: cannot read the export in '{where}' ({type(err).__name__}: {err}); export the "
                        "checkpoint again (mtlssl export)") from err
    problem = (f"{SPEC_FILE} is {type(spec).__name__}, not a mapping" if not isinstance(spec, dict)
               else model_problem({"spec": spec.get("model"), "state": state}))
    if problem:
        raise UserError(f"path: '{where}' is not a usable mtlssl export: {problem}; export the checkpoint again "
                        "(mtlssl export)")
    return spec, state


def _tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors stores plain contiguous CPU tensors (channels_last weights are not)."""
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def export(path: str | Path, out: str | Path) -> list[Path]:
    """Write the checkpoint's encoder and model as safetensors into directory ``out`` (never over existing files)."""
    ckpt = read_checkpoint(path, "export")
    model = rebuild_model(ckpt)
    out = Path(out).expanduser()
    files = [out / ENCODER_FILE, out / MODEL_FILE, out / SPEC_FILE]
    existing = [f.name for f in files if f.exists()]
    if existing:
        raise UserError(f"export: {out} already holds {', '.join(existing)}; choose a new --out directory")
    backbone = model.backbone
    spec = model.spec()
    encoder_meta = {"backbone": json.dumps(spec["backbone"]), "mean": json.dumps(backbone.mean.flatten().tolist()),
                    "std": json.dumps(backbone.std.flatten().tolist()), "source": ckpt["path"]}
    info = {"model": spec, "source": ckpt["path"], **{k: ckpt.get(k) for k in ("kind", "epoch", "step", "metrics")}}
    write_atomic(files[0], save(_tensors(backbone.export_state()), metadata=encoder_meta))
    write_atomic(files[1], save(_tensors(model.state_dict()), metadata={"source": ckpt["path"]}))
    write_atomic(files[2], json.dumps(info, indent=2, default=str) + "\n")
    return files


def export_main(args: list[str]) -> int:
    """``mtlssl export <run dir or .pt> --out DIR``; 0 on success, 2 on a user error."""
    parser = argparse.ArgumentParser(prog="mtlssl export", description="Write a trained model as safetensors: "
                                     f"{ENCODER_FILE} (the encoder; torchvision key names for ResNets), {MODEL_FILE} "
                                     f"and {SPEC_FILE} (the whole model, for mtlssl.api.load)")
    parser.add_argument("run", help="a run directory (its best.pt, else last.pt) or a checkpoint .pt")
    parser.add_argument("--out", required=True, help="the directory to write (its files must not exist yet)")
    options = parser.parse_args(args)
    try:
        files = export(options.run, options.out)
    except UserError as err:
        print(f"mtlssl export: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(f"wrote {f}" for f in files))
    return 0
