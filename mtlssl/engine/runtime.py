"""Where and how the numbers are computed: device, mixed precision, memory format."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mtlssl.errors import UserError

PRECISIONS = ("auto", "32", "bf16", "16")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise UserError(f"device={name} is not a device torch knows; use auto, cpu or cuda[:N]") from err


def keep_freed_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the OS (CPU training only).

    By default glibc unmaps every freed activation buffer over its mmap threshold and page-faults it
    back in on the next step; a CPU training step of the small CNN spends ~40% of its time there.
    Raising the mmap and trim thresholds keeps the memory mapped: 1.7x faster steps
    (scripts/bench_cpu_step.py). Returns whether the setting took (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_trim_threshold, 1 << 30)) and bool(libc.mallopt(m_mmap_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False


def has_fast_bf16(device: torch.device) -> bool:
    """Native bf16 arithmetic: Ampere+ GPUs; CPUs with AVX512-BF16 or AMX (elsewhere bf16 is emulated, slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu" and sys.platform.startswith("linux"):
        try:
            flags = Path("/proc/cpuinfo").read_text().split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto``: bf16 autocast where the hardware computes it natively (1.7x faster steps on an AVX512-BF16
    CPU, scripts/bench_cpu_step.py), else full precision."""
    precision = str(precision)
    if precision not in PRECISIONS:
        raise UserError(f"precision={precision} is not supported; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if has_fast_bf16(device) else "32"
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast for bf16/fp16; full precision otherwise."""
    if precision == "32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "16")


def memory_format(channels_last: bool) -> torch.memory_format:
    """channels_last is 2-3x faster for convolutions on CPUs (oneDNN) and on tensor-core GPUs."""
    return torch.channels_last if channels_last else torch.contiguous_format


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage computes: device, precision and memory format."""

    device: torch.device
    precision: str
    memory_format: torch.memory_format

    def __str__(self) -> str:
        fmt = "channels_last" if self.memory_format == torch.channels_last else "contiguous"
        return f"{self.device} ({'fp32' if self.precision == '32' else self.precision}, {fmt})"

    def images(self, batch: Tensor) -> Tensor:
        """A uint8 batch -> float [0, 1] images on the device, in the stage's memory format."""
        x = batch.to(self.device, non_blocking=True).float().div_(255)
        return x.contiguous(memory_format=self.memory_format)

    @classmethod
    def create(cls, device: str, precision: str, channels_last: bool) -> Runtime:
        """From the config's ``device``, ``precision`` and ``channels_last`` values, checked.

        On the CPU this also tunes the process's allocator (``keep_freed_memory``).
        """
        where = resolve_device(device)
        rt = cls(where, resolve_precision(precision, where), memory_format(channels_last))
        if rt.device.type == "cpu":
            keep_freed_memory()
        return rt
