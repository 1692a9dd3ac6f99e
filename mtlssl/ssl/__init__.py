"""Self-supervised pretext methods: a projector and a loss over the views' embeddings."""

from mtlssl.ssl.nt_xent import nt_xent
from mtlssl.ssl.simclr import SimCLR

__all__ = ["SimCLR", "nt_xent"]
