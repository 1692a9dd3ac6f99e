"""What every layer needs to read and write safely: atomic writes, weights-only loading, state-shape checks.

- ``atomic_open``: a file replaces its path only once complete (temporary file, fsync, rename), so a process
  killed at any moment leaves the previous complete file and a temporary one that is never read.
- ``load_weights_only``: ``torch.load(weights_only=True)`` only, so a checkpoint can never run code, with one
  clear message for a missing, truncated or foreign file.
- ``refuse_unfit_states``: a module whose ``load_state_dict`` names what does not fit and how to fix it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from mtlssl.errors import UserError


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only once it is complete: written to a temporary file beside it,
    fsynced, then renamed. A reader never sees a half-written file, and on any failure the old one stays.
    A failed write (a full disk, a vanished directory) is a UserError that says so."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        kept = "the previous one is unchanged" if path.exists() else "nothing was written"
        raise UserError(f"cannot write {path} ({err.strerror or err}); {kept}. Free disk space or choose a "
                        "writable directory (hydra.run.dir=<dir>), then relaunch to resume") from err
    finally:
        with contextlib.suppress(OSError):  # e.g. the directory itself could not be made
            tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, content: str | bytes) -> None:
    with atomic_open(path) as f:
        f.write(content.encode() if isinstance(content, str) else content)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files of ``atomic_open`` writes that a killed process left in ``directory``
    (never read: the file they were to replace is still the previous, complete one)."""
    stale = [p for p in Path(directory).glob(".*.tmp*") if p.is_file() and p.name.rsplit(".tmp", 1)[1].isdigit()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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


def unusable_fix(what: str) -> str:
    """How to get past an unusable checkpoint, by the config key that named it."""
    if what == "resume":
        return ("move checkpoints/last.pt aside to start the run over with resume=auto, or start a new run "
                "with a new hydra.run.dir")
    return f"point {what} at an intact mtlssl checkpoint (a run directory or its checkpoints/*.pt)"


def load_weights_only(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; anything unreadable is one UserError naming ``what``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, I/O error: torch raises many types
        raise UserError(f"{what}: cannot read checkpoint '{path}' ({type(err).__name__}: {_first_sentence(err)}); "
                        f"it is truncated, damaged or not a PyTorch file; {unusable_fix(what)}") from err


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

    if hasattr(module, "register_load_state_dict_pre_hook"):
        module.register_load_state_dict_pre_hook(check)
    else:  # torch < 2.5 has the same hook under its former, private name
        module._register_load_state_dict_pre_hook(check, with_module=True)
