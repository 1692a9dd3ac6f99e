"""Seeding and RNG state: every random draw of a run comes from its seed, so runs and resumes repeat."""

from __future__ import annotations

import os
import random
from typing import Any

import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed every generator; ``deterministic`` also makes torch pick deterministic kernels (slower on GPUs,
    where some atomics-based kernels are otherwise non-deterministic) and fail loudly where none exists."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible GEMMs
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic)


def generator(seed: int, *streams: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for one purpose and epoch, e.g. ``generator(seed, SHUFFLE, epoch)``.

    Deriving each epoch's generator from (seed, stream, epoch) makes an epoch's draws independent of
    what ran before it, so a resumed run draws exactly what an uninterrupted one would.
    """
    g = torch.Generator(device=device)
    mixed = seed
    for s in streams:
        mixed = (mixed * 1_000_003 + s + 1) % (2**63 - 1)
    g.manual_seed(mixed)
    return g


# Stream ids for ``generator``.
SHUFFLE, AUGMENT, WEIGHTING = 1, 2, 3


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
