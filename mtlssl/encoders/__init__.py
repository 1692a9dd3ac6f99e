"""Encoders: images in [0, 1] -> feature map and pooled features (see ``Encoder``).

Each backbone file holds one builder (``small_cnn.small_cnn``, ``resnet.resnet``) that a config in
``conf/encoder/`` names; ``build`` turns such a config into an encoder and loads ``encoder.init``.
"""

from mtlssl.encoders.base import Encoder

__all__ = ["Encoder"]
