"""A linear head: the standard probe-style task head."""

from torch import nn


def linear(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Linear(in_dim, out_dim)
