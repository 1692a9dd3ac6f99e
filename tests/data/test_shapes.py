"""The embedded "shapes" dataset: determinism, target contract, and labels that match the pixels."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mtlssl.data.shapes import (
    _PALETTE,
    COLOUR_NAMES,
    SCALE_RANGE,
    SHAPE_NAMES,
    SHAPES_TASKS,
    render_shapes,
)
from mtlssl.errors import UserError
from mtlssl.tasks import build_task

N, SIZE = 2000, 32


@pytest.fixture(scope="module")
def sample() -> tuple[Tensor, dict[str, Tensor]]:
    return render_shapes(N, seed=0, size=SIZE)


def _object_mask(images: Tensor) -> Tensor:
    """Pixels [n, H, W] of the object: the only saturated colour (background and clutter are grey-ish)."""
    rgb = images.float() / 255
    return (rgb.amax(dim=1) - rgb.amin(dim=1) > 0.3).float()


def _radius_px(targets: dict[str, Tensor]) -> Tensor:
    low, high = SCALE_RANGE
    return (low + (high - low) * targets["size"][:, 0]) * SIZE


def test_same_seed_gives_identical_output_whatever_the_chunk() -> None:
    images, targets = render_shapes(100, seed=5)
    for chunk in (1, 7, 4096):
        again, again_targets = render_shapes(100, seed=5, chunk=chunk)
        assert torch.equal(images, again)
        assert all(torch.equal(targets[k], again_targets[k]) for k in targets)


def test_different_seeds_differ() -> None:
    a_images, a_targets = render_shapes(50, seed=1)
    b_images, b_targets = render_shapes(50, seed=2)
    assert not torch.equal(a_images, b_images)
    assert not torch.equal(a_targets["position"], b_targets["position"])


def test_targets_follow_the_task_specs(sample: tuple[Tensor, dict[str, Tensor]]) -> None:
    images, targets = sample
    assert images.shape == (N, 3, SIZE, SIZE) and images.dtype == torch.uint8
    assert [t.name for t in SHAPES_TASKS] == ["shape", "colour", "size", "position", "outlined"]
    assert list(targets) == [t.name for t in SHAPES_TASKS]
    assert SHAPES_TASKS[0].num_outputs == len(SHAPE_NAMES) == 5
    assert SHAPES_TASKS[1].num_outputs == len(COLOUR_NAMES) == 6
    for task in SHAPES_TASKS:
        target = targets[task.name]
        if task.kind == "multiclass":
            assert target.shape == (N,) and target.dtype == torch.int64
            counts = torch.bincount(target, minlength=task.num_outputs)
            assert len(counts) == task.num_outputs and counts.min() > N / task.num_outputs / 2
        else:
            assert target.shape == (N, task.num_outputs) and target.dtype == torch.float32
            assert build_task(task).valid(target).all()
    assert targets["size"].min() >= 0 and targets["size"].max() <= 1
    assert targets["size"].min() < 0.05 and targets["size"].max() > 0.95
    assert set(targets["outlined"].unique().tolist()) == {0.0, 1.0}
    # The centre keeps the whole object (radius r) inside the image.
    radius = _radius_px(targets)[:, None] / SIZE
    assert (targets["position"] >= radius - 1e-6).all() and (targets["position"] <= 1 - radius + 1e-6).all()


def test_position_is_the_centre_of_the_object_pixels(sample: tuple[Tensor, dict[str, Tensor]]) -> None:
    images, targets = sample
    filled = targets["outlined"][:, 0] == 0
    mask = _object_mask(images[filled])
    centre = (torch.arange(SIZE) + 0.5) / SIZE
    area = mask.sum(dim=(1, 2))
    x = (mask * centre[None, None, :]).sum(dim=(1, 2)) / area
    y = (mask * centre[None, :, None]).sum(dim=(1, 2)) / area
    error = (torch.stack([x, y], dim=1) - targets["position"][filled]).norm(dim=1)
    # The semicircle's centroid sits ~0.02 from its bounding-box centre; mismatched labels would be ~0.2 off.
    assert error.max() < 0.04


def test_size_matches_the_object_area(sample: tuple[Tensor, dict[str, Tensor]]) -> None:
    images, targets = sample
    circles = (targets["shape"] == SHAPE_NAMES.index("circle")) & (targets["outlined"][:, 0] == 0)
    area = _object_mask(images[circles]).sum(dim=(1, 2))
    ratio = area / (math.pi * _radius_px(targets)[circles] ** 2)
    assert ratio.min() > 0.9 and ratio.max() < 1.1


def test_colour_label_is_the_nearest_palette_hue(sample: tuple[Tensor, dict[str, Tensor]]) -> None:
    images, targets = sample
    mask = _object_mask(images)
    mean_rgb = (images.float() * mask[:, None]).sum(dim=(2, 3)) / mask.sum(dim=(1, 2))[:, None]
    chroma, palette = mean_rgb / mean_rgb.sum(1, keepdim=True), _PALETTE / _PALETTE.sum(1, keepdim=True)
    nearest = torch.cdist(chroma, palette).argmin(dim=1)
    assert torch.equal(nearest, targets["colour"])


def test_outlined_objects_cover_fewer_pixels(sample: tuple[Tensor, dict[str, Tensor]]) -> None:
    images, targets = sample
    # Area relative to r^2 removes the scale, so filled and hollow objects of a shape compare directly.
    relative_area = _object_mask(images).sum(dim=(1, 2)) / _radius_px(targets) ** 2
    outlined = targets["outlined"][:, 0] == 1
    for k, name in enumerate(SHAPE_NAMES):
        of_shape = targets["shape"] == k
        hollow, filled = relative_area[of_shape & outlined].mean(), relative_area[of_shape & ~outlined].mean()
        assert hollow < 0.85 * filled, name


def test_image_size_is_a_parameter() -> None:
    images, targets = render_shapes(4, seed=0, size=64)
    assert images.shape == (4, 3, 64, 64)
    assert targets["position"].shape == (4, 2)


def test_no_images() -> None:
    images, targets = render_shapes(0, seed=0)
    assert images.shape == (0, 3, 32, 32)
    assert {k: tuple(v.shape) for k, v in targets.items()} == {
        "shape": (0,), "colour": (0,), "size": (0, 1), "position": (0, 2), "outlined": (0, 1),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n": 4, "size": 4}, "size=4"), ({"n": -1}, "n=-1"), ({"n": 4, "chunk": 0}, "chunk=0")],
)
def test_bad_input_is_a_user_error(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(UserError, match=message):
        render_shapes(seed=0, **kwargs)
