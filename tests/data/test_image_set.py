import pytest
import torch

from mtlssl.data.image_set import Dataset, ImageSet
from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec


def make_set(n: int = 10) -> ImageSet:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageSet(images, {"digit": torch.arange(n)})


def test_batches_cover_the_split_once_in_a_seeded_order() -> None:
    data = make_set(10)
    def seeded_order(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [t for _, y in data.batches(3, shuffle=True, generator=g) for t in y["digit"]]

    order, again = seeded_order(1), seeded_order(1)
    assert sorted(int(t) for t in order) == list(range(10)) and order == again
    assert [int(t) for t in order] != list(range(10))
    batches = list(data.batches(3, drop_last=True))
    assert len(batches) == data.num_batches(3, drop_last=True) == 3
    for images, targets in batches:  # images and targets stay aligned
        assert torch.equal(images[:, 0, 0, 0].long(), targets["digit"])


def test_skip_resumes_the_same_order_mid_epoch() -> None:
    data = make_set(10)
    def labels(skip: int) -> list[int]:
        g = torch.Generator().manual_seed(3)
        return [int(t) for _, y in data.batches(3, shuffle=True, generator=g, drop_last=True, skip=skip)
                for t in y["digit"]]

    assert labels(2) == labels(0)[6:] and len(labels(0)) == 9 and labels(3) == []


def test_dataset_refuses_empty_and_unknown_splits_and_tasks() -> None:
    data = Dataset("toy", [TaskSpec("digit", "multiclass", 10)], {"train": make_set(), "val": make_set(0)},
                   (0.5,), (0.25,))
    with pytest.raises(UserError, match="no split 'test'"):
        data.split("test")
    with pytest.raises(UserError, match="split 'val' of data 'toy' is empty"):
        data.split("val")
    with pytest.raises(UserError, match="unknown task 'colour'"):
        data.select(["colour"])
