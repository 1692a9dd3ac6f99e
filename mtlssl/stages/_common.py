"""What every stage's thin ``main`` shares: Hydra's output directory, the error boundary, the final report."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mtlssl.errors import UserError
from mtlssl.reporting.console import console

log = logging.getLogger("mtlssl")

StageRun = Callable[[DictConfig, Path], dict[str, float]]


def run_stage(run: StageRun, cfg: DictConfig) -> dict[str, float]:
    """Call a stage's ``run`` in Hydra's output directory. A ``UserError`` ends the process with one
    clear message and exit status 2 (``HYDRA_FULL_ERROR=1`` shows the traceback instead); in a sweep it
    fails only its own job, and the sweep goes on."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        metrics = run(cfg, run_dir)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", err)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # an exception, not an exit: Hydra records this job as failed and runs the rest of the sweep
        sys.exit(2)
    console.print(f"run directory: [bold]{run_dir}[/]", highlight=False)
    return metrics
