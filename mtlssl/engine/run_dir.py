"""The run directory: resolved config, checkpoints, TensorBoard, metrics.json; and resuming from it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mtlssl.engine.state import read_checkpoint
from mtlssl.errors import UserError
from mtlssl.io import remove_stale_temporaries
from mtlssl.reporting import provenance
from mtlssl.reporting.files import write_resolved_config

log = logging.getLogger(__name__)


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.tensorboard = self.path / "tb"

    def prepare(self, config: DictConfig | Mapping[str, Any]) -> None:
        """Create the run directory and record what makes the run (resolved config, provenance); clear the
        temporary files of a killed process's writes."""
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"cannot create the run directory '{self.path}' ({err.strerror}); "
                            "choose a writable one with hydra.run.dir=<dir>") from err
        for stale in [*remove_stale_temporaries(self.path), *remove_stale_temporaries(self.checkpoints)]:
            log.info("removed %s, the partial write of a killed process", stale)
        write_resolved_config(self.path, config)
        provenance.record(self.path)

    def resume_state(self, resume: str | bool, kind: str) -> dict[str, Any] | None:
        """The ``last.pt`` to continue from, per ``resume``: auto (if present), true (must be), false (never)."""
        mode = str(resume).lower()
        if mode not in ("auto", "true", "false"):
            raise UserError(f"resume={resume} is not one of auto, true, false")
        if mode == "false":
            if self.last.exists():
                raise UserError(f"run directory '{self.path}' already holds {self.last.name}; resume=false would "
                                "overwrite it. Use resume=auto to continue it, or a new hydra.run.dir")
            return None
        if not self.last.exists():
            if mode == "true":
                raise UserError(f"resume=true but '{self.last}' does not exist; relaunch with "
                                "hydra.run.dir=<the run directory to continue>")
            return None
        return read_checkpoint(self.last, "resume", kinds=(kind,), full=True)
