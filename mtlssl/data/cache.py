"""A tiny on-disk cache for generated or decoded uint8 tensors, keyed by what produced them."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mtlssl.errors import UserError
from mtlssl.io import atomic_open

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``$MTLSSL_CACHE``, else ``$XDG_CACHE_HOME/mtlssl``, else ``~/.cache/mtlssl``."""
    if "MTLSSL_CACHE" in os.environ:
        return Path(os.environ["MTLSSL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mtlssl"


def resolve_cache(cache_dir: str | Path | None) -> str | Path | None:
    """``"auto"`` -> the default cache folder; a path or None (no cache) as given."""
    return default_cache_dir() if cache_dir == "auto" else cache_dir


def cached(key: dict[str, Any], build: Callable[[], Any], cache_dir: str | Path | None) -> Any:
    """``build()``'s result, stored under a hash of ``key``; ``cache_dir=None`` turns caching off.

    A cache file that cannot be read (truncated, stale format) is rebuilt, never trusted.
    """
    if cache_dir is None:
        return build()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"{key.get('name', 'data')}-{digest}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception as err:  # a corrupt cache entry is rebuilt, not fatal
            log.warning("rebuilding unreadable cache file %s (%s)", path, err)
    value = build()
    try:
        with atomic_open(path) as f:
            torch.save(value, f)
    except UserError as err:  # a read-only or full cache is slower, not wrong (atomic_open says why)
        log.warning("could not write cache file %s (%s)", path, err)
    return value
