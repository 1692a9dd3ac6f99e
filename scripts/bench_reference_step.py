"""The reference step that scales this machine's timings to another's: one plain fp32 SGD step of a 4-layer
conv-BN-ReLU CNN (32-64-128-256 channels, channels_last) on 512 images of 3x32x32 (256 pairs of views) with an
NT-Xent loss. Issue 10 measured 0.93 s for it on a 2-core AVX2 machine without AVX-512, where the default
pipeline then took 769 s; a budget there of B seconds is B * (this step here / 0.93 s) here.

    python scripts/bench_reference_step.py                                  # this CPU as it is
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/bench_reference_step.py   # as on AVX2 only

It prints the median step time, and the budget that 3 minutes there means here.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from mtlssl.engine.runtime import keep_freed_memory
from mtlssl.ssl.nt_xent import nt_xent

REFERENCE_S = 0.93  # the step on the AVX2 machine of issue 10
REFERENCE_BUDGET_S = 180.0  # the default pipeline's budget there


def reference_cnn() -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out, stride in ((3, 32, 1), (32, 64, 2), (64, 128, 2), (128, 256, 2)):
        layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


def step_seconds(steps: int, warmup: int) -> list[float]:
    torch.manual_seed(0)
    model = reference_cnn().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.rand(512, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    times = []
    for i in range(warmup + steps):
        tic = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        z1, z2 = model(images).chunk(2)
        nt_xent(z1, z2).backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    keep_freed_memory()  # as mtlssl's stages do on the CPU
    times = step_seconds(args.steps, args.warmup)
    median = statistics.median(times)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads")
    print(f"reference step: median {median:.3f} s over {len(times)} steps (min {min(times):.3f}, max {max(times):.3f})")
    print(f"ratio to issue 10's AVX2 machine ({REFERENCE_S} s): {median / REFERENCE_S:.3f}; its "
          f"{REFERENCE_BUDGET_S:.0f} s budget is {REFERENCE_BUDGET_S * median / REFERENCE_S:.0f} s here")


if __name__ == "__main__":
    main()
