"""CPU training-step time with glibc's default allocator vs ``keep_freed_memory`` (mallopt).

The allocator setting is process-wide and cannot be undone, so each measurement runs in a fresh
subprocess; the two settings alternate, and the script prints the medians and their ratio.

    python scripts/bench_cpu_allocator.py [--width 32] [--batch 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CHILD = """
import sys, time, torch
from mtlssl.encoders.small_cnn import small_cnn
from mtlssl.engine.runtime import keep_freed_memory
from mtlssl.ssl.simclr import SimCLR
if sys.argv[1] == "tuned":
    assert keep_freed_memory(), "mallopt not available"
width, batch = int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
encoder = small_cnn(width).to(memory_format=torch.channels_last)
method = SimCLR(encoder.out_dim)
opt = torch.optim.SGD([*encoder.parameters(), *method.parameters()], lr=0.1, momentum=0.9)
views = torch.rand(2 * batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
def step():
    opt.zero_grad(); method.loss(encoder(views)).backward(); opt.step()
step()
times = []
for _ in range(8):
    tic = time.perf_counter(); step(); times.append(time.perf_counter() - tic)
print(sorted(times)[len(times) // 2])
"""


def measure(mode: str, width: int, batch: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(width), str(batch)], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256, help="images per step (2 views each)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"default": [], "tuned": []}
    for _ in range(args.rounds):
        for mode in times:  # alternate, so drifting machine load hits both alike
            times[mode].append(measure(mode, args.width, args.batch))
    default, tuned = (statistics.median(times[m]) for m in ("default", "tuned"))
    print(f"SimCLR step, small_cnn width {args.width}, {args.batch} images x 2 views, CPU, {args.rounds} rounds")
    print(f"  glibc default     {default * 1000:7.1f} ms/step  {args.batch / default:7.0f} images/s")
    print(f"  keep_freed_memory {tuned * 1000:7.1f} ms/step  {args.batch / tuned:7.0f} images/s")
    print(f"  speed-up          {default / tuned:7.2f}x")


if __name__ == "__main__":
    main()
