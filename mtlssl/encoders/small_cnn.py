"""A small VGG-style CNN: the fast CPU default (thousands of 32x32 images/s on two cores)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtlssl.encoders.base import Encoder
from mtlssl.errors import UserError


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def small_cnn(
    width: int = 32,
    depth: int = 4,
    in_channels: int = 3,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
) -> Encoder:
    """``depth`` conv-BN-ReLU blocks; the first keeps the resolution, each later one halves it and
    doubles the channels (width, 2*width, 4*width, ...)."""
    if width < 1 or depth < 1:
        raise UserError(f"small_cnn needs width >= 1 and depth >= 1 (got width={width}, depth={depth})")
    layers = _conv_bn_relu(in_channels, width, stride=1)
    channels = width
    for _ in range(depth - 1):
        layers += _conv_bn_relu(channels, channels * 2, stride=2)
        channels *= 2
    return Encoder(nn.Sequential(*layers), out_dim=channels, mean=mean, std=std)
