"""Wall time of the default pipeline, scaled to issue 10's reference AVX2 machine, beside a baseline setting.

Each pipeline runs in a fresh process; the reference step (``bench_reference_step.py``: 0.93 s on that machine)
is timed before and after each run, so a run's "there" time is ``wall * 0.93 s / reference here`` measured in
the same minutes (this shared machine's speed drifts by 10-40% over an hour).

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/bench_pipeline.py precision=32 \\
        --baseline "encoder.arch.width=32 pretrain.trainer.epochs=10 train_mtl.trainer.epochs=15"

Extra arguments are overrides for both runs; ``--baseline`` adds the baseline's own (e.g. the former defaults).
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reference_step import REFERENCE_S, step_seconds  # noqa: E402


def reference() -> float:
    return statistics.median(step_seconds(steps=8, warmup=2))


def pipeline(overrides: list[str], run_dir: Path) -> float:
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mtlssl", "pipeline", *overrides, f"hydra.run.dir={run_dir}"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - tic


def measure(label: str, overrides: list[str], out: Path) -> float:
    before = reference()
    wall = pipeline(overrides, out / label)
    after = reference()
    step = (before + after) / 2
    there = wall * REFERENCE_S / step
    print(f"| {label} | {wall:.0f} s | {before:.3f} / {after:.3f} s | {there:.0f} s |", flush=True)
    return there


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="the baseline's own overrides (quoted); none: no baseline")
    options, overrides = parser.parse_known_args()
    out = Path(tempfile.mkdtemp(prefix="bench_pipeline-"))
    print("| setting | wall here | reference step before / after | on issue 10's AVX2 machine |")
    print("|---|---:|---:|---:|")
    default = measure("defaults", overrides, out)
    if options.baseline is not None:
        baseline = measure("baseline", [*overrides, *shlex.split(options.baseline)], out)
        print(f"\nbaseline / defaults: {baseline / default:.2f}x")


if __name__ == "__main__":
    main()
