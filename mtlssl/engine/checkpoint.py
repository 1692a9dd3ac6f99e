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
from mtlssl.reporting.files import atomic_open

FORMAT_VERSION = 1
KINDS = ("pretrain", "mtl")


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
    if not p.is_file():
        raise UserError(f"{what}: checkpoint '{p}' does not exist; give the path of a run directory or a .pt file")
    return p


def load_checkpoint(path: str | Path, what: str, kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """Load and validate a checkpoint. ``what`` names the config key, for the error messages."""
    p = resolve_checkpoint(path, what)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{what}: cannot read checkpoint '{p}' ({type(err).__name__}: {str(err)[:200]}). "
                        "It may be truncated or not an mtlssl checkpoint; use another checkpoint") from err
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in KINDS:
        raise UserError(f"{what}: '{p}' is not an mtlssl checkpoint (no 'kind'); use one written by mtlssl")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{what}: '{p}' has format version {ckpt['format_version']}, newer than this mtlssl "
                        f"reads ({FORMAT_VERSION}); upgrade mtlssl")
    if ckpt["kind"] not in kinds:
        raise UserError(f"{what}: '{p}' is a {ckpt['kind']} checkpoint, but a {' or '.join(kinds)} "
                        f"checkpoint is needed here")
    ckpt["path"] = str(p)
    return ckpt
