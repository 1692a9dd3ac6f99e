"""torchvision ResNets as encoders, with the CIFAR stem (3x3 stride-1 conv, no max-pool) for small images."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torchvision
from torch import nn

from mtlssl.encoders.base import Encoder
from mtlssl.errors import UserError

_ARCHS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


def resnet(
    arch: str = "resnet18",
    cifar_stem: bool = False,
    in_channels: int = 3,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
) -> Encoder:
    """A randomly initialised torchvision ResNet without its classifier.

    ``cifar_stem`` replaces the 7x7 stride-2 conv and max-pool, which throw away most of a 32x32
    image before the first block (the SimCLR CIFAR recipe).
    """
    if arch not in _ARCHS:
        raise UserError(f"unknown resnet arch '{arch}'; use one of {', '.join(_ARCHS)}")
    net = _ARCHS[arch](weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return Encoder(body, out_dim=net.fc.in_features, mean=mean, std=std)
