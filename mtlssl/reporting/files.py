"""Machine-readable run outputs, written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from omegaconf import DictConfig, OmegaConf

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


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files of ``atomic_open`` writes that a killed process left in ``directory``
    (never read: the file they were to replace is still the previous, complete one)."""
    stale = [p for p in Path(directory).glob(".*.tmp*") if p.is_file() and p.name.rsplit(".tmp", 1)[1].isdigit()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_atomic(path: str | Path, content: str | bytes) -> None:
    with atomic_open(path) as f:
        f.write(content.encode() if isinstance(content, str) else content)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; null reads as "not measured"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_metrics(run_dir: str | Path, metrics: dict[str, Any]) -> None:
    write_atomic(Path(run_dir) / "metrics.json", json.dumps(_json_safe(metrics), indent=2, sort_keys=True) + "\n")


def write_resolved_config(run_dir: str | Path, cfg: DictConfig) -> None:
    write_atomic(Path(run_dir) / "resolved_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
