"""Backbones: images in [0, 1] -> every stage's feature map (``Backbone``). One file per family; a config in
``conf/encoder/`` names its builder (``small_cnn.small_cnn``, ``resnet.resnet``)."""

from mtlssl.models.backbones.base import Backbone

__all__ = ["Backbone"]
