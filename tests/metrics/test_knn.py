import math

import torch

from mtlssl.metrics import knn_accuracy


def clusters(n_per_class: int, num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(num_classes, dim) * 10.0
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centres[labels] + torch.randn(len(labels), dim, generator=generator)
    return features, labels


def test_separable_clusters_are_classified_perfectly_in_small_chunks():
    train_x, train_y = clusters(30, 4, 8, seed=0)
    test_x, test_y = clusters(10, 4, 8, seed=1)
    assert knn_accuracy(train_x, train_y, test_x, test_y, num_classes=4, k=5, chunk=7) == 1.0


# The query [1, 0] has neighbours (k=3): one class-0 item at cosine 1.0 and two class-1 items at
# cosine 0.6. Majority vote says class 1; with temperature 0.07 the weights are
# exp(1/0.07) ~ 1.6e6 against 2 * exp(0.6/0.07) ~ 1.05e4, so class 0 wins. The class-2 item
# (cosine -1) is outside the top 3.
BANK = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
BANK_LABELS = torch.tensor([0, 1, 1, 2])
QUERY, QUERY_LABEL = torch.tensor([[2.0, 0.0]]), torch.tensor([0])


def test_similarity_weighting_overrides_the_majority():
    assert knn_accuracy(BANK, BANK_LABELS, QUERY, QUERY_LABEL, num_classes=3, k=3) == 1.0


def test_high_temperature_falls_back_to_majority_vote():
    # exp(sim / 1000) ~ 1 for every neighbour: a plain vote, two class-1 items against one class-0.
    assert knn_accuracy(BANK, BANK_LABELS, QUERY, QUERY_LABEL, num_classes=3, k=3, temperature=1000.0) == 0.0


def test_tiny_temperature_does_not_overflow():
    assert knn_accuracy(BANK, BANK_LABELS, QUERY, QUERY_LABEL, num_classes=3, k=3, temperature=1e-4) == 1.0


def test_k_larger_than_the_bank_is_clipped():
    # k=50 over a bank of 4: every item votes; class 0 still dominates by weight.
    assert knn_accuracy(BANK, BANK_LABELS, QUERY, QUERY_LABEL, num_classes=3, k=50) == 1.0


def test_missing_labels_are_skipped_in_bank_and_queries():
    # The unlabelled bank item equals the query, so it would be its top neighbour and its -1 would
    # index no class (an error); the unlabelled query can never be predicted right, so counting
    # it would halve the accuracy.
    bank = torch.cat([BANK, QUERY])
    bank_labels = torch.cat([BANK_LABELS, torch.tensor([-1])])
    queries = torch.cat([QUERY, torch.tensor([[0.0, 1.0]])])
    query_labels = torch.tensor([0, -1])
    assert knn_accuracy(bank, bank_labels, queries, query_labels, num_classes=3, k=3) == 1.0


def test_no_labelled_query_is_nan():
    assert math.isnan(knn_accuracy(BANK, BANK_LABELS, QUERY, torch.tensor([-1]), num_classes=3))
