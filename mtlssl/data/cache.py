"""A tiny on-disk cache for generated or decoded uint8 tensors, keyed by what produced them.

A cache file holds ``{"format", "key", "value"}``: the key it was built for is stored beside the value, so a
file that is not this entry (a file of another dataset, a tensor or list saved by hand, an older format) is
recognised on reading. Every caller says what its value looks like (``check``): a file whose value has another
shape is not trusted either. Such a file, like an unreadable one (truncated, not a torch file), is rebuilt and
replaced with a warning that names it: a cache holds only derived data, so rebuilding gives exactly what a
fresh decode gives.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mtlssl.errors import UserError
from mtlssl.io import atomic_open

log = logging.getLogger(__name__)

# Bump when the file layout changes: it is part of every file name, so files of another layout are never read.
CACHE_FORMAT = 2
CACHE_ADVICE = ("point data.cache_dir (or $MTLSSL_CACHE) at a writable folder, or set data.cache_dir=null to "
                "turn the cache off")

Check = Callable[[Any], str | None]  # a cached value -> what is wrong with it, or None when it has the expected shape


def default_cache_dir() -> Path:
    """``$MTLSSL_CACHE``, else ``$XDG_CACHE_HOME/mtlssl``, else ``~/.cache/mtlssl``."""
    if "MTLSSL_CACHE" in os.environ:
        return Path(os.environ["MTLSSL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mtlssl"


def resolve_cache(cache_dir: str | Path | None) -> str | Path | None:
    """``"auto"`` -> the default cache folder; a path or None (no cache) as given."""
    return default_cache_dir() if cache_dir == "auto" else cache_dir


def cached(key: dict[str, Any], build: Callable[[], Any], cache_dir: str | Path | None, check: Check) -> Any:
    """``build()``'s result, stored under a hash of ``key``; ``cache_dir=None`` turns caching off.

    A cache file that cannot be read, was built for another key, or holds a value ``check`` rejects is
    rebuilt and replaced (with a warning naming it), never trusted.
    """
    if cache_dir is None:
        return build()
    stamp = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{stamp}".encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"{key.get('name', 'data')}-{digest}.pt"
    if path.exists():
        value, problem = _read(path, stamp, check)
        if problem is None:
            return value
        log.warning("cache file %s is unusable (%s): rebuilding and replacing it; delete the file if this warning "
                    "comes back", path, problem)
    value = build()
    _write(path, {"format": CACHE_FORMAT, "key": stamp, "value": value})
    return value


def _read(path: Path, stamp: str, check: Check) -> tuple[Any, str | None]:
    """The value stored in ``path`` for the key ``stamp``, or what is wrong with the file."""
    try:
        entry = torch.load(path, weights_only=True)
    except Exception as err:  # truncated, not a torch file, a folder, unreadable: rebuilt, not fatal
        return None, f"cannot be read: {type(err).__name__}: {err}"
    if not isinstance(entry, dict) or set(entry) != {"format", "key", "value"}:
        return None, f"holds {describe(entry)}, not an mtlssl cache entry"
    if entry["format"] != CACHE_FORMAT or entry["key"] != stamp:
        return None, f"was built for other data ({str(entry['key'])[:200]})"
    problem = check(entry["value"])
    return entry["value"], (None if problem is None else f"its value {problem}")


def _write(path: Path, entry: dict[str, Any]) -> None:
    """Store ``entry`` atomically; a read-only or full cache is slower, not wrong."""
    try:
        with atomic_open(path) as f:
            torch.save(entry, f)
    except UserError as err:  # atomic_open's message advises on run directories: say what to do with a cache
        cause = err.__cause__
        reason = getattr(cause, "strerror", None) or cause or err
        log.warning("could not write cache file %s (%s): the data will be decoded again on every run; %s",
                    path, reason, CACHE_ADVICE)


# --- what cached values look like ----------------------------------------------------------------------------


def describe(value: Any) -> str:
    """A short description of a loaded value, for messages ("a list of 2 items", "a tensor of shape [3] int64")."""
    if isinstance(value, Tensor):
        return f"a tensor of shape {list(value.shape)} ({str(value.dtype).removeprefix('torch.')})"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:8]}"
    if isinstance(value, list | tuple):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def uint8_images(value: Any) -> str | None:
    """A uint8 [N, C, H, W] tensor."""
    if isinstance(value, Tensor) and value.dtype == torch.uint8 and value.dim() == 4:
        return None
    return f"is {describe(value)}, not uint8 images [N, C, H, W]"


def _per_item(value: Any, n: int, what: str) -> str | None:
    if not isinstance(value, Tensor) or value.dim() < 1 or value.shape[0] != n:
        return f"has {what} {describe(value)}, not one row per image ({n})"
    return None


def images_and_labels(value: Any) -> str | None:
    """A pair (uint8 images [N, C, H, W], labels [N])."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        return f"is {describe(value)}, not a pair (images, labels)"
    return uint8_images(value[0]) or _per_item(value[1], value[0].shape[0], "labels")


def images_and_targets(value: Any) -> str | None:
    """A pair (uint8 images [N, C, H, W], {task: targets [N, ...]})."""
    if not isinstance(value, tuple | list) or len(value) != 2:
        return f"is {describe(value)}, not a pair (images, targets)"
    images, targets = value
    problem = uint8_images(images)
    if problem is not None:
        return problem
    if not isinstance(targets, dict):
        return f"has targets {describe(targets)}, not a dict of tensors"
    return next((p for name, t in targets.items() if (p := _per_item(t, images.shape[0], f"targets '{name}'"))), None)
