import math

import pytest
import torch

from mtlssl.metrics import linear_probe_accuracy


def blobs(n_per_class: int, num_classes: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 6.0
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    features = centres[labels] + torch.randn(len(labels), dim, generator=generator)
    # An offset and scale far from standard, which the train standardisation must absorb.
    return features * 50.0 + 1000.0, labels


def test_separable_blobs_are_probed_perfectly():
    train_x, train_y = blobs(40, 3, 16, seed=0)
    test_x, test_y = blobs(20, 3, 16, seed=1)
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=3) == pytest.approx(1.0)


def test_random_labels_are_near_chance_on_test():
    generator = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(400, 32, generator=generator), torch.randn(2000, 32, generator=generator)
    train_y = torch.randint(0, 4, (400,), generator=generator)
    test_y = torch.randint(0, 4, (2000,), generator=generator)
    accuracy = linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=4)
    # chance is 0.25; the std of an accuracy over 2000 items is ~0.01
    assert abs(accuracy - 0.25) < 0.05


def test_missing_labels_are_skipped():
    train_x, train_y = blobs(40, 3, 16, seed=0)
    test_x, test_y = blobs(20, 3, 16, seed=1)
    # A missing train label would break cross-entropy; a missing test label can never be
    # predicted right, so counting those would drop the accuracy to 60/80.
    train_y = torch.cat([train_y, torch.tensor([-1, -1])])
    train_x = torch.cat([train_x, train_x[:2]])
    test_y = torch.cat([test_y, torch.full((20,), -1)])
    test_x = torch.cat([test_x, test_x[:20]])
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=3) == pytest.approx(1.0)


def test_runs_under_no_grad_and_inference_mode_and_is_deterministic():
    train_x, train_y = blobs(20, 2, 4, seed=2)
    test_x, test_y = blobs(20, 2, 4, seed=3)
    test_x = test_x + torch.randn(test_x.shape, generator=torch.Generator().manual_seed(4)) * 150.0
    free = linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=2)
    with torch.no_grad():
        under_no_grad = linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=2)
    with torch.inference_mode():
        x, y, tx, ty = train_x.clone(), train_y.clone(), test_x.clone(), test_y.clone()
        under_inference = linear_probe_accuracy(x, y, tx, ty, num_classes=2)
    assert free == under_no_grad == under_inference


def test_constant_train_feature_is_ignored_not_divided_by_zero():
    train_x, train_y = blobs(20, 2, 4, seed=0)
    test_x, test_y = blobs(10, 2, 4, seed=1)
    without = linear_probe_accuracy(train_x, train_y, test_x, test_y, num_classes=2)
    # A column constant on train standardises to 0, so its weight never leaves 0 and the test
    # values in it (anything at all) change nothing.
    with_constant = linear_probe_accuracy(
        torch.cat([torch.full((40, 1), 3.0), train_x], dim=1),
        train_y,
        torch.cat([torch.randn(20, 1) * 1e3, test_x], dim=1),
        test_y,
        num_classes=2,
    )
    assert not math.isnan(with_constant)
    assert with_constant == without


def test_no_labelled_test_item_is_nan():
    train_x, train_y = blobs(20, 2, 4, seed=0)
    assert math.isnan(linear_probe_accuracy(train_x, train_y, train_x, torch.full((40,), -1), num_classes=2))
