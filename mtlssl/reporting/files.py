"""Machine-readable run outputs, written atomically (temporary file, fsync, rename)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtlssl.io import write_atomic


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


def write_resolved_config(run_dir: str | Path, cfg: DictConfig | Mapping[str, Any]) -> None:
    write_atomic(Path(run_dir) / "resolved_config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
