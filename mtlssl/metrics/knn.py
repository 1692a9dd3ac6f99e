"""Weighted k-nearest-neighbour accuracy on frozen features, for monitoring self-supervised training.

The classifier of Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric Instance
Discrimination"), as solo-learn and lightly use it: cosine similarity to a labelled bank, the k
most similar bank items vote for their class with weight exp(similarity / temperature).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlssl.errors import UserError


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> float:
    """Accuracy in [0, 1] of the weighted kNN vote of the train (bank) items on the test items.

    Items labelled -1 (missing) are left out of both the bank and the queries; ``k`` is clipped to
    the bank size; queries go ``chunk`` at a time so that memory stays at chunk x bank similarities.
    NaN when the bank or the queries hold no labelled item.
    """
    if not (k >= 1 and temperature > 0):
        raise UserError(f"kNN needs k >= 1 and temperature > 0 (got k={k}, temperature={temperature}); set "
                        "monitor.k and monitor.temperature (pretrain) or probe.k and probe.temperature (eval), "
                        "e.g. 20 and 0.07")
    bank_keep, query_keep = train_labels >= 0, test_labels >= 0
    bank, bank_labels = F.normalize(train_features[bank_keep].float(), dim=1), train_labels[bank_keep].long()
    queries, query_labels = test_features[query_keep], test_labels[query_keep].long()
    if bank.shape[0] == 0 or queries.shape[0] == 0:
        return math.nan
    k = min(k, bank.shape[0])
    correct = 0
    for start in range(0, queries.shape[0], chunk):
        similarity = F.normalize(queries[start : start + chunk].float(), dim=1) @ bank.T
        predicted = _vote(similarity, bank_labels, num_classes, k, temperature)
        correct += int((predicted == query_labels[start : start + chunk]).sum())
    return correct / queries.shape[0]


def _vote(similarity: Tensor, bank_labels: Tensor, num_classes: int, k: int, temperature: float) -> Tensor:
    """Predicted class per query row of ``similarity`` [Q, bank]."""
    top_similarity, top_index = similarity.topk(k, dim=1)
    # Subtracting each row's best similarity scales that row's weights by one constant, which
    # leaves the argmax alone and keeps exp() from overflowing at small temperatures.
    weights = ((top_similarity - top_similarity[:, :1]) / temperature).exp()
    votes = torch.zeros(similarity.shape[0], num_classes, dtype=weights.dtype, device=weights.device)
    votes.scatter_add_(1, bank_labels[top_index], weights)
    return votes.argmax(dim=1)
