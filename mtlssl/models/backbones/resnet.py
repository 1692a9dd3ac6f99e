"""torchvision ResNets as backbones, with torchvision's own weight names, and the CIFAR stem (3x3 stride-1
conv, no max-pool) for small images.

The modules keep torchvision's attribute names (``conv1``, ``bn1``, ``layer1`` ...), so the weights export
as a torchvision state dict: ``torchvision.models.resnet18()`` loads them with ``strict=True`` once its
``fc`` is replaced (``model.fc = nn.Identity()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torchvision
from torch import Tensor, nn

from mtlssl.errors import UserError
from mtlssl.models.backbones.base import Backbone

_ARCHS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


class ResNet(Backbone):
    """A torchvision ResNet without its classifier; its stages are ``layer1`` to ``layer4``."""

    def __init__(self, net: torchvision.models.ResNet, cifar_stem: bool, mean: Sequence[float],
                 std: Sequence[float]) -> None:
        channels = [_out_channels(getattr(net, name)) for name in STAGE_NAMES]
        stem = 1 if cifar_stem else 4
        super().__init__(mean, std, stage_channels=channels, stage_strides=[stem * 2**i for i in range(4)])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def stages(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        maps = []
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
            maps.append(x)
        return maps


def _out_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def resnet(
    arch: str = "resnet18",
    cifar_stem: bool = False,
    in_channels: int = 3,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> ResNet:
    """A randomly initialised torchvision ResNet. ``cifar_stem`` replaces the 7x7 stride-2 conv and max-pool,
    which throw away most of a 32x32 image before the first block (the SimCLR CIFAR recipe)."""
    if arch not in _ARCHS:
        raise UserError(f"unknown resnet arch '{arch}'; use one of {', '.join(_ARCHS)}")
    net = _ARCHS[arch](weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return ResNet(net, cifar_stem, mean, std)


# Format v1 kept the stem and the stages in one flat Sequential ``body``: conv1, bn1, relu, maxpool, layer1..4.
_V1_BODY = ("conv1", "bn1", "relu", "maxpool", *STAGE_NAMES)


def v1_key(key: str) -> str:
    """A format-v1 weight name (``body.<i>.<rest>``) -> torchvision's (this module's)."""
    if not key.startswith("body."):  # the normalisation buffers
        return key
    index, rest = key.removeprefix("body.").split(".", 1)
    return f"{_V1_BODY[int(index)]}.{rest}"
