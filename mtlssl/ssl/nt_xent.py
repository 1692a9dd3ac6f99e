"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., ICML 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """Mean NT-Xent loss over all 2N anchors.

    ``z1[i]`` and ``z2[i]`` are embeddings of two views of image i. Each anchor's positive is the
    other view of its image; its negatives are the other 2N - 2 embeddings (self-pairs excluded).
    Similarity is cosine similarity divided by ``temperature``.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"nt_xent needs two [N, D] tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"nt_xent temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)
