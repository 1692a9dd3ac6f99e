"""Training-step time of every weighting method relative to equal weighting, at several task counts.

Same model, batch and data for every method; the methods are measured round-robin in one process (so a
drifting machine load hits them alike), each step a full forward, backward (or per-task Jacobian) and
optimizer step. Gradient-level methods run in exact mode (``grad_space=params``) and features mode; the
``naive-loop`` row is LibMTL's way: T backward passes whose gradients are copied out of ``.grad`` one
task at a time, then averaged. Prints one markdown table per task count.

    python scripts/bench_weighting.py [--tasks 2 5 10 20] [--steps 10] [--device cpu] [--methods equal pcgrad ...]
    python scripts/bench_weighting.py --memory --tasks 10      # CPU peak memory, one fresh process per method

On CUDA the timing tables also give each method's peak allocated memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

import mtlssl.weighting as weighting_lib
from mtlssl.engine.backward import GradientOptions, backward
from mtlssl.engine.runtime import keep_freed_memory
from mtlssl.models.arch.base import MultiTaskArchitecture
from mtlssl.models.build import build_model
from mtlssl.tasks import TaskSpec, build_tasks

EXTRA_HPARAMS = {"static": lambda t: {"weights": [1.0] * t}}


def hard_sharing(width: int, tasks: list[TaskSpec], device: torch.device) -> MultiTaskArchitecture:
    """small_cnn of ``width`` with a linear head per task, channels_last on ``device``."""
    model = build_model({"arch": "hps", "backbone": {"_target_": "mtlssl.models.backbones.small_cnn.small_cnn",
                                                     "width": width},
                         "head": {"_target_": "mtlssl.models.heads.linear.linear", "_partial_": True},
                         "tasks": [t.as_dict() for t in tasks]})
    return model.to(device, memory_format=torch.channels_last)


def make_step(model: MultiTaskArchitecture, method: weighting_lib.Weighting | None, options: GradientOptions,
              x: Tensor, targets: Tensor, tasks: list[TaskSpec]) -> Callable[[], None]:
    params = [*model.parameters(), *(method.parameters() if method is not None else [])]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def losses() -> tuple[Tensor, Tensor]:
        output = model(x)
        return output.shared, torch.stack([t.loss(output.outputs[t.name], targets[:, i : i + 1])
                                           for i, t in enumerate(build_tasks(tasks))])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        features, task_losses = losses()
        if method is None:  # LibMTL-style naive loop
            shared = model.shared_parameters()
            rows = []
            for i in range(len(tasks)):
                for p in shared:
                    p.grad = None
                task_losses[i].backward(retain_graph=True)
                rows.append(torch.cat([p.grad.reshape(-1).clone() for p in shared]))
            direction = torch.stack(rows).mean(dim=0)
            offset = 0
            for p in shared:
                p.grad = direction[offset : offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        else:
            own = [model.task_parameters(t.name) for t in tasks]
            backward(task_losses, model.shared_parameters(), own, method, options, features)
        optimizer.step()
        if method is not None and method.needs_post_step_losses:
            with torch.no_grad():
                method.step_end(losses()[1])

    return step


def build_runs(num_tasks: int, names: list[str], device: torch.device, width: int, batch: int
               ) -> dict[str, Callable[[], None]]:
    """One step function per method (and features-mode variant), plus the naive loop."""
    torch.manual_seed(0)
    tasks = [TaskSpec(f"t{i}", "regression", 1) for i in range(num_tasks)]
    x = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    targets = torch.randn(batch, num_tasks, device=device)
    runs: dict[str, Callable[[], None]] = {}
    for name in names:
        spaces = ["params", "features"] if weighting_lib.METHODS[name].needs_gradients else ["params"]
        for space in spaces:
            model = hard_sharing(width, tasks, device)
            method = weighting_lib.get(name, num_tasks, **EXTRA_HPARAMS.get(name, lambda t: {})(num_tasks)).to(device)
            method.generator = torch.Generator(device=device).manual_seed(0)
            label = name if space == "params" else f"{name} (features)"
            runs[label] = make_step(model, method, GradientOptions(grad_space=space), x, targets, tasks)
    if "nash_mtl" in names:  # the solver amortised over 10 steps (Navon et al.'s update_weights_every)
        model = hard_sharing(width, tasks, device)
        method = weighting_lib.get("nash_mtl", num_tasks, update_every=10).to(device)
        runs["nash_mtl (update_every=10)"] = make_step(model, method, GradientOptions(), x, targets, tasks)
    model = hard_sharing(width, tasks, device)
    runs["naive-loop (LibMTL style, mean)"] = make_step(model, None, GradientOptions(), x, targets, tasks)
    return runs


def bench(num_tasks: int, names: list[str], steps: int, device: torch.device, width: int, batch: int) -> None:
    runs = build_runs(num_tasks, names, device, width, batch)
    times: dict[str, list[float]] = {label: [] for label in runs}
    peaks: dict[str, float] = {}  # CUDA only: max_memory_allocated per method
    for step in runs.values():  # warm-up
        step()
    for _ in range(steps):
        for label, step in runs.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            tic = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peaks[label] = max(peaks.get(label, 0.0), torch.cuda.max_memory_allocated() / 2**20)
            times[label].append(time.perf_counter() - tic)
    medians = {label: statistics.median(t) for label, t in times.items()}
    equal, naive = medians["equal"], medians["naive-loop (LibMTL style, mean)"]
    print(f"\nT = {num_tasks} tasks, small_cnn width {width}, batch {batch}, {device}, median of {steps} steps")
    memory_header = (" peak MiB |", "---:|") if peaks else ("", "")
    print(f"| method | ms/step | vs equal | vs naive loop |{memory_header[0]}\n|---|---:|---:|---:|{memory_header[1]}")
    for label, t in sorted(medians.items(), key=lambda kv: kv[1]):
        memory = f" {peaks[label]:.0f} |" if peaks else ""
        print(f"| {label} | {t * 1000:.1f} | {t / equal:.2f}x | {t / naive:.2f}x |{memory}")


def rss_bytes() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory_child(label: str, num_tasks: int, names: list[str], width: int, batch: int) -> None:
    """In a fresh process: the peak resident memory of 3 steps of one method, above its set-up baseline."""
    step = build_runs(num_tasks, names, torch.device("cpu"), width, batch)[label]
    baseline = rss_bytes()
    for _ in range(3):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline) / 2**20)


def peak_memory(num_tasks: int, names: list[str], width: int, batch: int) -> None:
    labels = list(build_runs(num_tasks, names, torch.device("cpu"), width, batch))
    peaks = {}
    for label in labels:
        out = subprocess.run([sys.executable, __file__, "--memory-child", label, "--tasks", str(num_tasks),
                              "--width", str(width), "--batch", str(batch), "--methods", *names],
                             capture_output=True, text=True, check=True)
        peaks[label] = float(out.stdout.strip().splitlines()[-1])
    print(f"\nPeak resident memory above set-up, T = {num_tasks}, CPU, one fresh process per method")
    print("| method | MiB |\n|---|---:|")
    for label, mib in sorted(peaks.items(), key=lambda kv: kv[1]):
        print(f"| {label} | {mib:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 5, 10, 20])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="+", default=sorted(weighting_lib.METHODS))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--memory", action="store_true", help="CPU peak memory per method (fresh processes)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.memory_child:
        return peak_memory_child(args.memory_child, args.tasks[0], args.methods, args.width, args.batch)
    if args.memory:
        for num_tasks in args.tasks:
            peak_memory(num_tasks, args.methods, args.width, args.batch)
        return
    if device.type == "cpu":
        keep_freed_memory()
    for num_tasks in args.tasks:
        bench(num_tasks, args.methods, args.steps, device, args.width, args.batch)


if __name__ == "__main__":
    main()
