"""Checkpoint files: written atomically, loaded as data only (``weights_only=True``), checked on load.

A checkpoint is one dict: ``format_version``, ``kind`` ("pretrain" or "mtl"), the resolved ``config``,
``encoder`` (its constructor config and state), stage-specific model states, ``tasks`` (specs),
``epoch``, ``step``, ``metrics``; ``last.pt`` adds what resuming needs (optimizer, scheduler,
grad scaler, RNG states).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mtlssl.errors import UserError
from mtlssl.reporting.files import atomic_open

FORMAT_VERSION = 1
KINDS = ("pretrain", "mtl")
WRITTEN_BY = {"pretrain": "mtlssl pretrain", "mtl": "mtlssl train-mtl"}


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file, fsync, then rename: a reader never sees a half-written file and the
    previous checkpoint stays valid until the new one is complete."""
    with atomic_open(path) as f:
        torch.save({"format_version": FORMAT_VERSION, **payload}, f)


def resolve_checkpoint(path: str | Path, what: str) -> Path:
    """A ``.pt`` file, or a run directory (its ``checkpoints/best.pt``, else ``last.pt``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise UserError(f"{what}: run directory '{p}' holds no checkpoints/best.pt or last.pt; "
                        f"point {what} at a finished run directory or a .pt file")
    if not p.exists():
        raise UserError(f"{what}: checkpoint '{p}' does not exist; give the path of a run directory or a .pt file")
    if not p.is_file():
        raise UserError(f"{what}: '{p}' is not a regular file; give the path of a run directory or a .pt file")
    return p


def _first_sentence(err: Exception) -> str:
    """torch's load errors run to several lines of advice; the first sentence names the problem."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")[:200]


def _fix(what: str) -> str:
    """How to get past an unusable checkpoint, by the config key that named it."""
    if what == "resume":
        return ("move checkpoints/last.pt aside to start the run over with resume=auto, or start a new run "
                "with a new hydra.run.dir")
    return f"point {what} at an intact mtlssl checkpoint (a run directory or its checkpoints/*.pt)"


def _kind_fix(what: str, kinds: tuple[str, ...]) -> str:
    if what == "resume":  # the run directory itself holds another stage's run
        return "this run directory belongs to another stage: run this one in a new hydra.run.dir"
    return f"give a run directory or .pt written by {' or '.join(WRITTEN_BY[k] for k in kinds)}"


def load_checkpoint(path: str | Path, what: str, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Load and validate a checkpoint. ``what`` names the config key, for the error messages."""
    p = resolve_checkpoint(path, what)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, I/O error: torch raises many types
        raise UserError(f"{what}: cannot read checkpoint '{p}' ({type(err).__name__}: {_first_sentence(err)}); "
                        f"it is truncated, damaged or not a PyTorch file; {_fix(what)}") from err
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS:
        raise UserError(f"{what}: '{p}' is not an mtlssl checkpoint (no 'kind'); {_fix(what)}")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{what}: '{p}' has format version {ckpt['format_version']}, newer than this mtlssl "
                        f"reads ({FORMAT_VERSION}); upgrade mtlssl")
    if ckpt["kind"] not in kinds:
        # The wording up to "needed here" is matched by tests (and the run-dir guard repeats it): keep it.
        raise UserError(f"{what}: '{p}' is a {ckpt['kind']} checkpoint, but a {' or '.join(kinds)} "
                        f"checkpoint is needed here; {_kind_fix(what, kinds)}")
    ckpt["path"] = str(p)
    return ckpt


def _some(keys: list[str], shown: int = 3) -> str:
    return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")


def state_mismatch(module: nn.Module, state: Mapping[str, Any], strict: bool = True) -> str | None:
    """Why ``state`` would not load into ``module`` (missing or unexpected keys, a tensor of another shape),
    or None when it fits."""
    own = module.state_dict()
    problems = []
    if strict:
        missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
        problems += [f"{name} {_some(keys)}" for name, keys in (("missing", missing), ("unexpected", unexpected))
                     if keys]
    shapes = [(k, list(state[k].shape), list(v.shape)) for k, v in own.items()
              if isinstance(v, torch.Tensor) and isinstance(state.get(k), torch.Tensor) and state[k].shape != v.shape]
    if shapes:
        (k, there, here), more = shapes[0], f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""
        problems.append(f"{k} is {there} there but {here} here{more}")
    return "; ".join(problems) or None


def refuse_unfit_states(module: nn.Module, what: str, fix: str) -> None:
    """Make ``module.load_state_dict`` end in a UserError naming ``what`` and ``fix``, not torch's RuntimeError,
    when a checkpoint's tensors do not fit: e.g. a run resumed after its encoder or task list was changed.
    Checked before any tensor is copied, so the module is left as it was."""

    def check(mod: nn.Module, state_dict: Mapping[str, Any], prefix: str, local_metadata: Any, strict: bool,
              *unused: Any) -> None:
        own = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        problem = state_mismatch(mod, own, strict)
        if problem:
            raise UserError(f"{what} in the checkpoint do not fit this model ({problem}); {fix}")

    module.register_load_state_dict_pre_hook(check)
