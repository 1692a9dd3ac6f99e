"""Backbones: each stage's map as declared, torchvision's weight names for ResNets, and format 1's names mapped."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from mtlssl.models.backbones import resnet, small_cnn


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_a_resnet_backbone_is_a_torchvision_resnet_without_its_classifier(arch: str) -> None:
    backbone = resnet.resnet(arch, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)).eval()
    reference = getattr(torchvision.models, arch)(weights=None).eval()
    reference.fc = nn.Identity()
    reference.load_state_dict(backbone.export_state(), strict=True)  # torchvision's own key names
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(backbone(x), reference(x), atol=1e-5)


def test_resnet_stages_have_the_declared_channels_and_strides() -> None:
    for cifar_stem, strides in ((False, (4, 8, 16, 32)), (True, (1, 2, 4, 8))):
        backbone = resnet.resnet("resnet18", cifar_stem=cifar_stem).eval()
        maps = backbone.feature_maps(torch.rand(1, 3, 32, 32))
        assert backbone.stage_strides == strides and backbone.stage_channels == (64, 128, 256, 512)
        assert [m.shape[1:] for m in maps] == [(c, 32 // s, 32 // s) for c, s in zip((64, 128, 256, 512), strides,
                                                                                     strict=True)]


def test_format_1_resnet_names_map_to_torchvision_names() -> None:
    """Format 1 kept a ResNet as one Sequential: conv1, bn1, relu, maxpool, layer1..4 (rebuilt here as it was)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    old = {f"body.{k}": v for k, v in body.state_dict().items()}
    backbone = resnet.resnet("resnet18")
    backbone.load_state_dict({**{resnet.v1_key(k): v for k, v in old.items()}, "mean": backbone.mean,
                              "std": backbone.std}, strict=True)
    assert torch.equal(backbone.layer3[1].bn2.running_var, net.layer3[1].bn2.running_var)
    assert resnet.v1_key("mean") == "mean"


def test_format_1_small_cnn_names_map_block_by_block() -> None:
    assert small_cnn.v1_key("body.0.weight") == "blocks.0.0.weight"
    assert small_cnn.v1_key("body.4.running_mean") == "blocks.1.1.running_mean"
    assert small_cnn.v1_key("body.7.bias") == "blocks.2.1.bias"
    assert small_cnn.v1_key("std") == "std"


def test_small_cnn_normalises_inside_and_pools_its_last_stage() -> None:
    backbone = small_cnn.small_cnn(width=4, depth=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        maps = backbone.feature_maps(x)
        by_hand = (x - 0.5) / 0.25
        for block in backbone.blocks:
            by_hand = block(by_hand)
    assert [m.shape[1:] for m in maps] == [(4, 16, 16), (8, 8, 8), (16, 4, 4)]
    assert torch.equal(maps[-1], by_hand) and torch.allclose(backbone(x), by_hand.mean(dim=(2, 3)))
