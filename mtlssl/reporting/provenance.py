"""``provenance.json``: what made a run directory — mtlssl's git commit and dirtiness, library versions, the
command line, the working directory, the host and the start time. ``mtlssl reproduce`` reads it back.

The first launch in a directory is the record; a relaunch (``resume``) keeps it and appends itself to
``relaunches``, so a run continued under other code says so.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import mtlssl
from mtlssl.io import write_atomic

log = logging.getLogger(__name__)

FILENAME = "provenance.json"
GIT_TIMEOUT_S = 5.0  # a hung git (network filesystem, lock) must not hold up a run
# The keys of a relaunch entry: what can change between the launches of one run directory.
RELAUNCH_KEYS = ("started", "commit", "dirty", "argv", "cwd", "hostname")


def source_dir() -> Path:
    """The directory of mtlssl's own source: git runs here, so an install outside a repository records no commit."""
    return Path(mtlssl.__file__).resolve().parent


def git(args: list[str], cwd: Path, timeout: float = GIT_TIMEOUT_S) -> bytes | None:
    """git's stdout, or None when git is missing, fails or hangs: provenance never fails a run."""
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=timeout,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})  # status must not take the index lock
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(where: Path | None = None) -> dict[str, Any]:
    """``commit`` (HEAD's hash) and ``dirty`` (tracked files modified), both None outside a git checkout of
    mtlssl. Two git calls: is the package tracked (an install inside someone else's repository is not), and
    ``status --porcelain=v2 --branch``, which gives the commit and the changes at once."""
    where = where or source_dir()
    tracked = git(["ls-files", "--", "__init__.py"], where)
    if not tracked or not tracked.strip():
        return {"commit": None, "dirty": None}
    status = git(["status", "--porcelain=v2", "--branch", "--untracked-files=no"], where)
    if status is None:
        return {"commit": None, "dirty": None}
    lines = status.decode(errors="replace").splitlines()
    oid = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    return {"commit": None if oid in (None, "(initial)") else oid,
            "dirty": any(not line.startswith("#") for line in lines)}


def installed_versions() -> dict[str, str]:
    """Every installed distribution's version, by name (sorted): what a rerun elsewhere must match."""
    versions = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(name, dist.version)
    return dict(sorted(versions.items(), key=lambda kv: kv[0].lower()))


def accelerator() -> dict[str, Any]:
    """CUDA and cuDNN versions and the GPUs' names (when torch sees any), and the CPU's vector extensions (which
    decide CPU speed: AVX-512/bf16 machines are several times faster than AVX2 ones)."""
    import torch

    info: dict[str, Any] = {"cuda": torch.version.cuda, "cudnn": None, "gpus": [],
                            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def current() -> dict[str, Any]:
    """This process's provenance (not written anywhere)."""
    return {
        "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        **git_state(),
        "source": str(source_dir()),
        "versions": {"mtlssl": mtlssl.__version__, "python": platform.python_version(), **installed_versions()},
        "accelerator": accelerator(),
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        "hostname": socket.gethostname(),
    }


def read(run_dir: str | Path) -> dict[str, Any] | None:
    """The recorded provenance of a run directory; None when it has none or it is unreadable."""
    try:
        record = json.loads((Path(run_dir) / FILENAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def record(run_dir: str | Path) -> dict[str, Any]:
    """Write ``<run_dir>/provenance.json`` for this launch and return the file's content: a new record, or the
    existing one with this launch appended to ``relaunches``. An unreadable existing file is left as it is."""
    path = Path(run_dir) / FILENAME
    now = current()
    if not path.exists():
        content = now
    else:
        content = read(run_dir)
        if content is None:
            log.warning("%s is unreadable; leaving it as it is", path)
            return now
        content.setdefault("relaunches", []).append({k: now[k] for k in RELAUNCH_KEYS})
    write_atomic(path, json.dumps(content, indent=2) + "\n")
    return content
