"""CPU training-step time: glibc's default allocator and fp32, vs ``keep_freed_memory``, vs that plus bf16.

The allocator setting is process-wide and cannot be undone, so each measurement runs in a fresh
subprocess; the settings alternate round by round, and the script prints medians and ratios.
bf16 is only fast on CPUs with native bf16 (AVX512-BF16 or AMX); elsewhere it is emulated.

    python scripts/bench_cpu_step.py [--width 32] [--batch 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = """
import sys, time, torch
from mtlssl.models.backbones.small_cnn import small_cnn
from mtlssl.engine.runtime import keep_freed_memory
from mtlssl.ssl.simclr import SimCLR
allocator, precision, width, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if allocator == "tuned":
    assert keep_freed_memory(), "mallopt not available"
torch.manual_seed(0)
encoder = small_cnn(width).to(memory_format=torch.channels_last)
method = SimCLR(encoder.out_dim)
opt = torch.optim.SGD([*encoder.parameters(), *method.parameters()], lr=0.1, momentum=0.9)
views = torch.rand(2 * batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
def step():
    opt.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = method.loss(encoder(views))
    loss.backward()
    opt.step()
step()
times = []
for _ in range(8):
    tic = time.perf_counter(); step(); times.append(time.perf_counter() - tic)
print(sorted(times)[len(times) // 2])
"""

SETTINGS = {
    "fp32, glibc default allocator": ("default", "32"),
    "fp32, keep_freed_memory": ("tuned", "32"),
    "bf16 autocast, keep_freed_memory": ("tuned", "bf16"),
}


def measure(allocator: str, precision: str, width: int, batch: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, allocator, precision, str(width), str(batch)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256, help="images per step (2 views each)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, setting in SETTINGS.items():  # alternate, so drifting machine load hits all alike
            times[name].append(measure(*setting, args.width, args.batch))
    medians = {name: statistics.median(t) for name, t in times.items()}
    baseline = medians["fp32, glibc default allocator"]
    print(f"SimCLR step, small_cnn width {args.width}, {args.batch} images x 2 views, channels_last, "
          f"median of {args.rounds} processes")
    print("| setting | ms/step | images/s | speed-up |\n|---|---:|---:|---:|")
    for name, t in medians.items():
        print(f"| {name} | {t * 1000:.1f} | {args.batch / t:,.0f} | {baseline / t:.2f}x |")


if __name__ == "__main__":
    main()
