"""Checkpoint files: written atomically, loaded as data only (``weights_only=True``), checked on load.

A checkpoint is one dict: ``format_version``, ``kind`` ("pretrain" or "mtl"), the resolved ``config``,
``encoder`` (its constructor config and state), stage-specific model states, ``tasks`` (specs),
``epoch``, ``step``, ``metrics``; ``last.pt`` adds what resuming needs (optimizer, scheduler,
grad scaler, RNG states).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtlssl.errors import UserError
from mtlssl.io import atomic_open, load_weights_only, resolve_checkpoint, unusable_fix

FORMAT_VERSION = 1
KINDS = ("pretrain", "mtl")
WRITTEN_BY = {"pretrain": "mtlssl pretrain", "mtl": "mtlssl train-mtl"}


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file, fsync, then rename: a reader never sees a half-written file and the
    previous checkpoint stays valid until the new one is complete."""
    with atomic_open(path) as f:
        torch.save({"format_version": FORMAT_VERSION, **payload}, f)


def _kind_fix(what: str, kinds: tuple[str, ...]) -> str:
    if what == "resume":  # the run directory itself holds another stage's run
        return "this run directory belongs to another stage: run this one in a new hydra.run.dir"
    return f"give a run directory or .pt written by {' or '.join(WRITTEN_BY[k] for k in kinds)}"


def load_checkpoint(path: str | Path, what: str, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Load and validate a checkpoint. ``what`` names the config key, for the error messages."""
    p = resolve_checkpoint(path, what)
    ckpt = load_weights_only(p, what)
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS:
        raise UserError(f"{what}: '{p}' is not an mtlssl checkpoint (no 'kind'); {unusable_fix(what)}")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{what}: '{p}' has format version {ckpt['format_version']}, newer than this mtlssl "
                        f"reads ({FORMAT_VERSION}); upgrade mtlssl")
    if ckpt["kind"] not in kinds:
        # The wording up to "needed here" is matched by tests (and the run-dir guard repeats it): keep it.
        raise UserError(f"{what}: '{p}' is a {ckpt['kind']} checkpoint, but a {' or '.join(kinds)} "
                        f"checkpoint is needed here; {_kind_fix(what, kinds)}")
    ckpt["path"] = str(p)
    return ckpt
