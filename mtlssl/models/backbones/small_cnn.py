"""A small VGG-style CNN: the fast CPU default (thousands of 32x32 images/s on two cores)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mtlssl.errors import UserError
from mtlssl.models.backbones.base import Backbone


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch),
                         nn.ReLU(inplace=True))


class SmallCNN(Backbone):
    """``depth`` conv-BN-ReLU stages; the first has stride ``stem_stride`` (1 keeps the resolution), each later one
    halves it and doubles the channels (width, 2*width, 4*width, ...)."""

    def __init__(self, width: int, depth: int, in_channels: int, mean: Sequence[float], std: Sequence[float],
                 stem_stride: int = 1) -> None:
        channels = [width * 2**i for i in range(depth)]
        super().__init__(mean, std, stage_channels=channels, stage_strides=[stem_stride * 2**i for i in range(depth)])
        inputs = [in_channels, *channels[:-1]]
        self.blocks = nn.ModuleList(_conv_bn_relu(c_in, c_out, stride=stem_stride if i == 0 else 2)
                                    for i, (c_in, c_out) in enumerate(zip(inputs, channels, strict=True)))

    def stages(self, x: Tensor) -> list[Tensor]:
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps


def small_cnn(
    width: int = 32,
    depth: int = 4,
    in_channels: int = 3,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.25, 0.25, 0.25),
    stem_stride: int = 1,
) -> SmallCNN:
    if width < 1 or depth < 1 or stem_stride < 1:
        raise UserError(f"small_cnn needs width, depth and stem_stride >= 1 (got width={width}, depth={depth}, "
                        f"stem_stride={stem_stride})")
    return SmallCNN(width, depth, in_channels, mean, std, stem_stride)


def v1_key(key: str) -> str:
    """A format-v1 weight name (one flat Sequential ``body``: conv, bn, relu per block) -> this module's."""
    if not key.startswith("body."):  # the normalisation buffers
        return key
    index, rest = key.removeprefix("body.").split(".", 1)
    block, layer = divmod(int(index), 3)
    return f"blocks.{block}.{layer}.{rest}"
