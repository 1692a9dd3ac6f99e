"""BatchAugment: per-sample independence, reproducibility, presets, and each op against its reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from mtlssl.augment import BatchAugment
from mtlssl.augment.batch import (
    _axis_aligned_grid,
    _centre_crop_fallback,
    _crop_flip_theta,
    _Sampler,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    hsv_to_rgb,
    rgb_to_hsv,
)
from mtlssl.errors import UserError

# The config presets; single-op tests start from NONE (every op off) and switch one on.
NONE = dict(crop_scale=None, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
WEAK = dict(crop_scale=(0.6, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5, jitter_p=0.0, grayscale_p=0.0)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images_u8(b: int = 8, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), generator=gen(seed), dtype=torch.uint8)


def test_identical_images_in_a_batch_get_different_augmentations():
    image = images_u8(b=1)
    out = BatchAugment()(image.expand(2, -1, -1, -1), gen())
    assert not torch.allclose(out[0], out[1], atol=1e-3)


def test_same_seed_reproduces_and_different_seed_differs():
    x = images_u8(b=16)
    aug = BatchAugment(blur_p=0.5)
    assert torch.equal(aug(x, gen(1)), aug(x, gen(1)))
    assert not torch.allclose(aug(x, gen(1)), aug(x, gen(2)), atol=1e-3)


def test_views_are_independent_draws():
    x = images_u8(b=4)
    v1, v2, v3 = BatchAugment().views(x, 3, gen())
    assert not torch.allclose(v1, v2, atol=1e-3) and not torch.allclose(v2, v3, atol=1e-3)


@pytest.mark.parametrize("preset", [{}, WEAK, NONE, dict(blur_p=1.0)], ids=["simclr", "weak", "none", "blur"])
@pytest.mark.parametrize("channels", [3, 1])
def test_output_is_float32_in_unit_range_with_input_shape(preset, channels):
    x = images_u8(b=6, c=channels, h=12, w=20)
    out = BatchAugment(**preset)(x, gen())
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1


def test_none_preset_is_exactly_the_identity():
    x = images_u8()
    aug = BatchAugment(**NONE)
    assert torch.equal(aug(x, gen()), x.float() / 255)
    xf = torch.rand(4, 3, 8, 8, generator=gen())
    assert torch.equal(aug(xf, gen()), xf)


def test_none_preset_does_not_modify_a_float_input_in_place():
    xf = torch.rand(4, 3, 8, 8, generator=gen())
    out = BatchAugment(**NONE)(xf, gen())
    out.zero_()
    assert xf.sum() > 0


@pytest.mark.parametrize(("h", "w"), [(16, 16), (12, 20)])
def test_full_crop_with_flip_is_an_exact_horizontal_flip(h, w):
    # The full image has area fraction 1 and aspect ratio W/H (1 for the square image).
    x = images_u8(h=h, w=w)
    ratio = (w / h, w / h)
    aug = BatchAugment(**{**NONE, "crop_scale": (1.0, 1.0), "crop_ratio": ratio, "flip_p": 1.0})
    torch.testing.assert_close(aug(x, gen()), x.flip(-1).float() / 255, atol=1e-5, rtol=0)


def test_flip_without_crop_is_exact_and_per_sample():
    x = images_u8(b=64)
    out = BatchAugment(**{**NONE, "flip_p": 0.5})(x, gen())
    flipped = torch.tensor([torch.equal(o, i.flip(-1).float() / 255) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i.float() / 255) for o, i in zip(out, x, strict=True)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_crop_zooms_by_the_drawn_side_fractions():
    # Ramps along x and y: the output's span along each axis is set by the crop's side fraction. The second and
    # the second-last output pixels are sampled s (n - 3) / n pixels apart for a side of s pixels out of n, inside
    # the image even for a crop at its edge (the outermost ones can fall in the border's half pixel).
    h, w = 32, 64
    ramp_x = torch.linspace(0, 1, w).expand(1, 1, h, w)
    ramp_y = torch.linspace(0, 1, h).view(1, 1, h, 1).expand(1, 1, h, w)
    x = torch.cat((ramp_x, ramp_y, ramp_x), dim=1).expand(16, -1, -1, -1)
    aug = BatchAugment(**{**NONE, "crop_scale": (0.25, 0.25), "crop_ratio": (1.0, 1.0)})
    out = aug(x, gen())
    span_x = out[:, 0, 0, -2] - out[:, 0, 0, 1]
    span_y = out[:, 1, -2, 0] - out[:, 1, 1, 0]
    # Square in pixels with a quarter of the area: sides of 0.5 * sqrt(H*W) pixels, rounded to whole pixels.
    side = round(0.5 * (h * w) ** 0.5)
    torch.testing.assert_close(span_x, torch.full((16,), side * (w - 3) / (w * (w - 1))), atol=1e-5, rtol=0)
    torch.testing.assert_close(span_y, torch.full((16,), side * (h - 3) / (h * (h - 1))), atol=1e-5, rtol=0)


def crop_boxes(theta: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """(top, left, crop height, crop width) in pixels of each crop matrix (normalised coords span [-1, 1])."""
    w, h = theta[:, 0, 0].abs() * width, theta[:, 1, 1] * height
    left = (theta[:, 0, 2] + 1) * width / 2 - w / 2
    top = (theta[:, 1, 2] + 1) * height / 2 - h / 2
    return top, left, h, w


def torchvision_boxes(n: int, height: int, width: int, scale, ratio, seed: int = 0) -> torch.Tensor:
    """[n, 4] (top, left, h, w) from torchvision's own RandomResizedCrop.get_params, the reference."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(seed)
    image = torch.zeros(1, height, width)
    return torch.tensor([RandomResizedCrop.get_params(image, list(scale), list(ratio)) for _ in range(n)],
                        dtype=torch.float64)


def our_boxes(n: int, height: int, width: int, scale, ratio, seed: int = 0) -> torch.Tensor:
    sampler = _Sampler(gen(seed), torch.device("cpu"), n)
    theta = _crop_flip_theta(sampler, height, width, scale, ratio, flip_p=0.5).double()
    return torch.stack(crop_boxes(theta, height, width), dim=1)


@pytest.mark.parametrize(
    ("height", "width", "scale", "ratio"),
    [
        (32, 32, (0.08, 1.0), (3 / 4, 4 / 3)),  # SimCLR's default on CIFAR-sized images
        (24, 40, (0.08, 1.0), (3 / 4, 4 / 3)),  # non-square
        (16, 64, (0.08, 1.0), (3 / 4, 4 / 3)),  # very wide: many rejections, some centre-crop fallbacks
        (96, 96, (0.6, 1.0), (3 / 4, 4 / 3)),  # the weak preset
    ],
)
def test_crop_boxes_are_distributed_as_torchvisions(height, width, scale, ratio):
    # torchvision draws up to 10 candidates per image and keeps the first that fits; clamping an oversized crop
    # instead biases the area upwards (0.535 against 0.489 at 32 x 32 with the default scale and ratio).
    from scipy.stats import ks_2samp

    n = 20000
    ours = our_boxes(n, height, width, scale, ratio)
    reference = torchvision_boxes(n, height, width, scale, ratio)
    # The boxes are whole pixels inside the image, as torchvision's.
    torch.testing.assert_close(ours, ours.round(), atol=1e-4, rtol=0)
    top, left, h, w = ours.round().unbind(1)
    assert bool((top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all())
    assert bool((top + h <= height).all() and (left + w <= width).all())
    area, ref_area = h * w / (height * width), reference[:, 2] * reference[:, 3] / (height * width)
    se = (area.var() / n + ref_area.var() / n).sqrt()
    assert abs(area.mean() - ref_area.mean()) < 4 * se + 1e-9
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(area.quantile(q) - ref_area.quantile(q)) < 0.02
    for mine, theirs in ((area, ref_area), (h, reference[:, 2]), (w, reference[:, 3]), (top, reference[:, 0]),
                         (left, reference[:, 1])):
        assert ks_2samp(mine.numpy(), theirs.numpy()).pvalue > 1e-3


def test_no_candidate_that_fits_falls_back_to_torchvisions_centre_crop():
    # Every candidate of a square crop of at least 0.9 of a 8 x 24 image is taller than the image. torchvision then
    # takes the centre crop with the aspect ratio clamped to the range: full height, width 8 * 1.0.
    ours = our_boxes(64, 8, 24, (0.9, 1.0), (1.0, 1.0))
    reference = torchvision_boxes(64, 8, 24, (0.9, 1.0), (1.0, 1.0))
    assert torch.equal(reference, torch.tensor([[0.0, 8.0, 8.0, 8.0]]).expand(64, 4))
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    # A tall image clamps to the lowest ratio: full width 10, height round(10 / 0.5) = 20, centred.
    torch.testing.assert_close(our_boxes(8, 30, 10, (0.9, 1.0), (0.5, 0.5)),
                               torchvision_boxes(8, 30, 10, (0.9, 1.0), (0.5, 0.5)), atol=1e-4, rtol=0)
    # An image whose aspect lies in the range keeps the whole image (torchvision's last branch; no fixed draw reaches
    # it reliably, since the whole image itself is a candidate that fits).
    assert _centre_crop_fallback(30, 10, (0.3, 0.4)) == (30, 10)


def test_crop_draws_only_from_the_callers_generator_and_repeats():
    state = torch.get_rng_state()
    first = our_boxes(256, 24, 40, (0.08, 1.0), (3 / 4, 4 / 3), seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(first, our_boxes(256, 24, 40, (0.08, 1.0), (3 / 4, 4 / 3), seed=3))
    assert not torch.equal(first, our_boxes(256, 24, 40, (0.08, 1.0), (3 / 4, 4 / 3), seed=4))


def test_axis_aligned_grid_matches_affine_grid():
    sampler = _Sampler(gen(), torch.device("cpu"), 16)
    theta = _crop_flip_theta(sampler, 12, 20, (0.08, 1.0), (0.75, 4 / 3), flip_p=0.5)
    expected = F.affine_grid(theta, [16, 3, 12, 20], align_corners=False)
    torch.testing.assert_close(_axis_aligned_grid(theta, 12, 20), expected, atol=1e-6, rtol=0)


def test_grayscale_replicates_the_luma():
    x = images_u8()
    out = BatchAugment(**{**NONE, "grayscale_p": 1.0})(x, gen())
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    xf = x.float() / 255
    luma = 0.299 * xf[:, 0] + 0.587 * xf[:, 1] + 0.114 * xf[:, 2]
    torch.testing.assert_close(out[:, 0], luma, atol=1e-6, rtol=0)


def test_jitter_changes_only_the_selected_samples():
    x = images_u8(b=64)
    out = BatchAugment(**{**NONE, "jitter_p": 0.5})(x, gen())
    kept = torch.tensor([torch.equal(o, i.float() / 255) for o, i in zip(out, x, strict=True)])
    assert 10 < int(kept.sum()) < 54


def test_colour_ops_are_skipped_for_single_channel_images():
    x = images_u8(c=1)
    out = BatchAugment(**{**NONE, "jitter_p": 1.0, "grayscale_p": 1.0})(x, gen())
    assert torch.equal(out, x.float() / 255)


def colourful(b: int = 4) -> torch.Tensor:
    """Random pixels plus the edge cases of the HSV conversion: black, white, grey, primaries, ties."""
    x = torch.rand(b, 3, 8, 12, generator=gen())
    special = torch.tensor([[0, 0, 0], [1, 1, 1], [.5, .5, .5], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                            [1, 1, 0], [0, 1, 1], [1, 0, 1], [.2, .7, .7], [.9, .9, .1]])
    x[0, :, 0, : len(special)] = special.T
    return x


def test_hsv_round_trip_is_the_identity():
    x = colourful()
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)
    hue = rgb_to_hsv(x)[:, 0]
    assert hue.min() >= 0 and hue.max() < 1


@pytest.mark.parametrize("turns", [0.0, 1.0, -1.0])
def test_hue_shift_by_whole_turns_is_the_identity(turns):
    x = colourful()
    torch.testing.assert_close(adjust_hue(x, torch.full((4,), turns)), x, atol=1e-5, rtol=0)


def per_image_reference(x, factors, reference):
    return torch.stack([reference(image, float(f)) for image, f in zip(x, factors, strict=True)])


@pytest.mark.parametrize(
    ("op", "reference", "factors", "atol"),
    [
        (adjust_hue, TF.adjust_hue, [-0.5, -0.1, 0.07, 0.33], 1e-5),
        # torchvision's tensor grayscale weighs red 0.2989 (PIL, ITU-R 601-2: 0.299), so grey levels
        # differ by up to 1e-4 and the blends by 1e-4 * |1 - factor|.
        (adjust_saturation, TF.adjust_saturation, [0.0, 0.6, 1.0, 1.4], 1.5e-4),
        (adjust_contrast, TF.adjust_contrast, [0.0, 0.6, 1.0, 1.4], 1.5e-4),
        (adjust_brightness, TF.adjust_brightness, [0.0, 0.6, 1.0, 1.4], 1e-6),
    ],
    ids=["hue", "saturation", "contrast", "brightness"],
)
def test_colour_op_matches_torchvision_per_image(op, reference, factors, atol):
    x = colourful()
    factors = torch.tensor(factors)
    expected = per_image_reference(x, factors, reference)
    torch.testing.assert_close(op(x, factors), expected, atol=atol, rtol=0)


def test_blur_matches_torchvision_per_image():
    x = torch.rand(3, 3, 16, 16, generator=gen())
    sigmas = [0.3, 1.0, 2.0]
    expected = torch.stack([TF.gaussian_blur(i, [5, 5], [s, s]) for i, s in zip(x, sigmas, strict=True)])
    torch.testing.assert_close(gaussian_blur(x, torch.tensor(sigmas), 5), expected, atol=1e-5, rtol=0)


def test_blur_keeps_a_constant_image_and_reduces_noise_variance():
    aug = BatchAugment(**{**NONE, "blur_p": 1.0, "blur_sigma": (1.0, 2.0), "blur_kernel_frac": 0.2})
    constant = torch.full((4, 3, 32, 32), 0.3)
    torch.testing.assert_close(aug(constant, gen()), constant, atol=1e-6, rtol=0)
    noise = torch.rand(4, 3, 32, 32, generator=gen())
    blurred = aug(noise, gen())
    torch.testing.assert_close(blurred.mean(dim=(1, 2, 3)), noise.mean(dim=(1, 2, 3)), atol=1e-2, rtol=0)
    assert bool((blurred.var(dim=(1, 2, 3)) < 0.5 * noise.var(dim=(1, 2, 3))).all())


@pytest.mark.parametrize(
    ("height", "width", "frac", "size"),
    [(32, 32, 0.1, 3), (224, 224, 0.1, 23), (96, 96, 0.1, 9), (4, 4, 3.0, 7), (32, 2, 0.5, 3)],
)
def test_blur_kernel_size_is_the_nearest_odd_size_that_fits(height, width, frac, size):
    assert blur_kernel_size(height, width, frac) == size


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(flip_p=1.5), "flip_p"),
        (dict(jitter_p=-0.1), "jitter_p"),
        (dict(grayscale_p=float("nan")), "grayscale_p"),
        (dict(blur_p=2), "blur_p"),
        (dict(jitter_strength=-1), "jitter_strength"),
        (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
        (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
        (dict(crop_scale=(0.5, 1.2)), "crop_scale"),
        (dict(crop_scale=(0.5,)), "crop_scale"),
        (dict(crop_ratio=(0.0, 1.0)), "crop_ratio"),
        (dict(crop_ratio=(2.0, 1.0)), "crop_ratio"),
        (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
        (dict(blur_sigma=(2.0, 1.0)), "blur_sigma"),
        (dict(blur_kernel_frac=0.0), "blur_kernel_frac"),
    ],
)
def test_invalid_hyper_parameter_raises_user_error_naming_it(kwargs, name):
    with pytest.raises(UserError, match=name):
        BatchAugment(**kwargs)


def test_bad_images_raise_user_error():
    aug = BatchAugment()
    with pytest.raises(UserError, match="C = 1 or 3"):
        aug(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), gen())
    with pytest.raises(UserError, match="uint8 or float"):
        aug(torch.zeros(2, 3, 8, 8, dtype=torch.int32), gen())
