"""Batched image augmentation on the training device, with independent random parameters per sample.

A torchvision v2 transform called on a batch draws one parameter set for the whole batch, so every
image gets the same crop and colour change, which is wrong for contrastive learning. Here every random
parameter is a tensor with one entry per sample, drawn from a caller-supplied seeded generator on the
images' device: a batch is augmented by a few vectorised ops (no loop over samples), DataLoader
workers only decode, and a seed reproduces a run.

The colour ops are module-level functions taking one factor per sample, with the semantics of
torchvision's ``adjust_brightness`` / ``adjust_contrast`` / ``adjust_saturation`` / ``adjust_hue``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mtlssl.errors import UserError

# ITU-R 601-2 luma weights (as PIL's "L" mode).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Guards divisions by zero for black and grey pixels; far below one 8-bit step.
_EPS = 1e-12
# Crop candidates per sample before the centre-crop fallback, as torchvision's RandomResizedCrop.get_params.
CROP_CANDIDATES = 10


# The ops below use in-place chains on their own temporaries (never on their inputs): on CPU every fresh
# full-size tensor can cost page faults when the allocator has returned memory to the OS.


def _per_sample(values: Tensor) -> Tensor:
    """[B] -> [B,1,1,1], so one value per sample broadcasts over C, H, W."""
    return values.view(-1, 1, 1, 1)


def rgb_to_grayscale(images: Tensor) -> Tensor:
    """[B,3,H,W] -> [B,1,H,W] luma."""
    r, g, b = images.split(1, dim=1)
    return (LUMA_WEIGHTS[0] * r).add_(g, alpha=LUMA_WEIGHTS[1]).add_(b, alpha=LUMA_WEIGHTS[2])


def _blend(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * images + (1 - factor) * other, clamped; factor is [B] (> 1 extrapolates, as torchvision)."""
    return torch.lerp(other, images, _per_sample(factor)).clamp_(0, 1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Scale intensities by ``factor`` [B] (1 = identity)."""
    return (images * _per_sample(factor)).clamp_(0, 1)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with each image's mean grey level (0 = flat grey, 1 = identity)."""
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean, factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image (0 = grey, 1 = identity)."""
    return _blend(images, rgb_to_grayscale(images), factor)


def _hsv_planes(images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """[B,3,H,W] RGB in [0,1] -> hue (turns, [0,1)), saturation, value, each [B,1,H,W]."""
    r, g, b = images.split(1, dim=1)
    value = images.amax(dim=1, keepdim=True)
    chroma = value - images.amin(dim=1, keepdim=True)
    # Grey pixels (chroma 0) have no hue: the clamps make hue and saturation 0 there instead of NaN.
    saturation = chroma / value.clamp_min(_EPS)
    inv_chroma = chroma.clamp_min(_EPS).reciprocal_()
    # Hue in sixths of a turn, measured from the channel holding the maximum (ties give the same hue).
    # The branch is chosen by lerp with 0/1 weights (exact at 0 and 1): torch.where on full-size
    # masks is several times slower on CPU.
    max_is_r = (value == r).to(images.dtype)
    max_is_g = (value == g).to(images.dtype)
    hue6 = torch.lerp((r - g).mul_(inv_chroma).add_(4), (b - r).mul_(inv_chroma).add_(2), max_is_g)
    hue6 = torch.lerp(hue6, (g - b).mul_(inv_chroma), max_is_r)
    # hue6 is in [-1, 5]; shifted positive, frac() is the wrap into [0, 1) (torch.remainder is slow on CPU).
    return hue6.add_(6).div_(6).frac_(), saturation, value


def _rgb_from_hsv_planes(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """Hue in [0,1), saturation, value, each [B,1,H,W] -> RGB [B,3,H,W].

    Channel n is v - v*s*f(k) with k = offset_n + 6h, offsets (5, 3, 1) for (r, g, b) and
    f(k) = clamp(min(k, 4 - k), 0, 1) on [0, 6), periodic: a branch-free form of the sector table.
    f is a flat-topped triangle centred on k = 2; as k lies in [1, 11) it is written as the sum of
    that triangle and its copy one period later, which avoids a per-pixel remainder.
    """
    offsets = torch.tensor((3.0, 1.0, -1.0), device=hue.device, dtype=hue.dtype).view(1, 3, 1, 1)
    u = offsets + 6 * hue  # k - 2, in [-1, 9)
    f = u.abs().neg_().add_(2).clamp_(0, 1)
    f += u.sub_(6).abs_().neg_().add_(2).clamp_(0, 1)
    return value - f.mul_(value * saturation)


def rgb_to_hsv(images: Tensor) -> Tensor:
    """[B,3,H,W] RGB in [0,1] -> HSV [B,3,H,W] with hue in turns [0,1) (torchvision's convention)."""
    return torch.cat(_hsv_planes(images), dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of ``rgb_to_hsv`` (hue in [0,1))."""
    return _rgb_from_hsv_planes(*hsv.split(1, dim=1))


def adjust_hue(images: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` [B] turns (0 and 1 = identity; 0.5 = complementary colours)."""
    hue, saturation, value = _hsv_planes(images)
    # Wrap the shift per sample (B values) so the per-pixel wrap is a frac() of a number in [0, 2).
    hue = hue.add_(_per_sample(torch.remainder(shift, 1.0))).frac_()
    return _rgb_from_hsv_planes(hue, saturation, value)


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with one ``sigma`` [B] per sample, reflect padding.

    Per-sample kernels become a grouped convolution over the B*C channels of a single "image", so the
    whole batch is two conv calls. ``kernel_size`` must be odd and at most 2*min(H, W) - 1 (reflect pad).
    """
    b, c, h, w = images.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma.unsqueeze(1)) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # [B*C, K]
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(b * c, 1, 1, -1), groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(b * c, 1, -1, 1), groups=b * c)
    return x.view(b, c, h, w)


def blur_kernel_size(height: int, width: int, kernel_frac: float) -> int:
    """The odd integer nearest to kernel_frac * height, at least 3, capped so reflect padding fits."""
    size = max(3, 2 * math.floor(kernel_frac * height / 2) + 1)
    return min(size, 2 * min(height, width) - 1)


class _Sampler:
    """Per-sample random draws from one generator on the images' device."""

    def __init__(self, generator: torch.Generator, device: torch.device, n: int) -> None:
        self.generator, self.device, self.n = generator, device, n

    def uniform(self, lo: float, hi: float, *shape: int) -> Tensor:
        """[B, *shape] uniform draws in [lo, hi)."""
        return lo + (hi - lo) * torch.rand(self.n, *shape, generator=self.generator, device=self.device)

    def bernoulli(self, p: float) -> Tensor:
        # rand is in [0, 1), so p=1 always and p=0 never selects.
        return torch.rand(self.n, generator=self.generator, device=self.device) < p


def _centre_crop_fallback(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """(h, w) of torchvision's fallback when no candidate fits: the image's aspect ratio clamped to ``ratio``,
    with the full width (image narrower than the range) or the full height (wider); else the whole image."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return round(width / ratio[0]), width
    if in_ratio > ratio[1]:
        return height, round(height * ratio[1])
    return height, width


def _crop_flip_theta(sampler: _Sampler, height: int, width: int, scale: tuple[float, float],
                     ratio: tuple[float, float], flip_p: float) -> Tensor:
    """Affine matrices [B,2,3] mapping output coords to a random resized crop (optionally flipped).

    The crop box is torchvision's ``RandomResizedCrop.get_params``, vectorised over samples and candidates:
    each sample draws ``CROP_CANDIDATES`` candidates with area fraction ~ U(scale) and log aspect ratio
    (width / height, in pixels) ~ U(log ratio), w and h rounded to whole pixels as torchvision does, and keeps
    the first with w <= W and h <= H; if none fits, torchvision's centre crop (``_centre_crop_fallback``). The
    offset is a whole pixel, uniform over the positions where the box fits. The boxes therefore have
    torchvision's distribution; only the random numbers come from the caller's generator, drawn in a fixed
    order (areas, aspects, rows, columns, flips), so a seed reproduces them. Clamping an oversized candidate
    instead of drawing again (14% of draws at the default range) would bias the area up: 0.535 on average
    against torchvision's 0.489.

    In normalised coords ([-1, 1] spans the image) a crop of side fractions (cw, ch) centred at (cx, cy) is
    x_in = cw * x_out + cx; negating cw mirrors the crop, so flip costs no extra resample.
    """
    area = sampler.uniform(*scale, CROP_CANDIDATES) * (height * width)  # [B, K] in pixels
    aspect = torch.exp(sampler.uniform(math.log(ratio[0]), math.log(ratio[1]), CROP_CANDIDATES))
    cand_w, cand_h = torch.sqrt(area * aspect).round_(), torch.sqrt(area / aspect).round_()
    fits = (cand_w >= 1) & (cand_w <= width) & (cand_h >= 1) & (cand_h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # argmax returns the first of equal maxima
    found = fits.any(dim=1)
    fallback_h, fallback_w = _centre_crop_fallback(height, width, ratio)
    crop_w = torch.where(found, cand_w.gather(1, first)[:, 0], float(fallback_w))
    crop_h = torch.where(found, cand_h.gather(1, first)[:, 0], float(fallback_h))
    # torchvision's randint(0, H - h + 1); the clamp only guards float rounding of u * n up to n.
    top = torch.minimum((sampler.uniform(0, 1) * (height - crop_h + 1)).floor_(), height - crop_h)
    left = torch.minimum((sampler.uniform(0, 1) * (width - crop_w + 1)).floor_(), width - crop_w)
    top = torch.where(found, top, float((height - fallback_h) // 2))
    left = torch.where(found, left, float((width - fallback_w) // 2))
    sign_x = torch.where(sampler.bernoulli(flip_p), -1.0, 1.0)
    centre_x, centre_y = (2 * left + crop_w) / width - 1, (2 * top + crop_h) / height - 1
    crop_w, crop_h = crop_w / width, crop_h / height
    zero = torch.zeros_like(crop_w)
    return torch.stack((crop_w * sign_x, zero, centre_x, zero, crop_h, centre_y), dim=1).view(-1, 2, 3)


def _axis_aligned_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """``F.affine_grid(theta, ..., align_corners=False)`` for matrices without rotation or shear.

    affine_grid multiplies every pixel's coordinates by its matrix (a small-K bmm that costs more than
    grid_sample itself on CPU); with a diagonal matrix x_in depends only on the column and y_in only on
    the row, so the grid is two broadcast [B, W] and [B, H] rows.
    """
    def centres(n: int) -> Tensor:  # pixel centres in normalised coords (align_corners=False)
        return (2 * torch.arange(n, device=theta.device, dtype=theta.dtype) + 1) / n - 1

    grid_x = theta[:, 0, 0:1] * centres(width) + theta[:, 0, 2:3]  # [B, W]
    grid_y = theta[:, 1, 1:2] * centres(height) + theta[:, 1, 2:3]  # [B, H]
    size = (theta.shape[0], height, width)
    return torch.stack((grid_x.unsqueeze(1).expand(size), grid_y.unsqueeze(2).expand(size)), dim=-1)


def _select(mask: Tensor, chosen: Tensor, other: Tensor) -> Tensor:
    """Per-sample ``torch.where(mask, chosen, other)`` for a [B] mask.

    lerp with a 0/1 weight returns exactly one endpoint (PyTorch evaluates it from the nearer end) and
    is several times faster than torch.where with a broadcast mask on CPU.
    """
    return torch.lerp(other, chosen, _per_sample(mask.to(chosen.dtype)))


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    """Accept any length-2 sequence (configs give lists) and return a float pair."""
    if len(value) != 2:
        raise UserError(f"augmentation.{name} must be a pair [lo, hi], got {value!r}; set e.g. "
                        f"augmentation.{name}=[lo,hi]")
    return float(value[0]), float(value[1])


def _check(ok: bool, name: str, value: object, valid: str) -> None:
    if not ok:  # named by the config key (augmentation=<preset> builds this class)
        raise UserError(f"augmentation.{name} must be {valid}, got {value!r}; set augmentation.{name} to such a "
                        "value (or pick another preset: augmentation=none|weak|simclr)")


class BatchAugment(torch.nn.Module):
    """SimCLR-style augmentation of a whole batch with independent per-sample parameters.

    Pipeline: random resized crop + horizontal flip (one bilinear resample), colour jitter, grayscale,
    Gaussian blur. Input is uint8 [B,C,H,W] or float in [0,1], C = 3 (or 1: colour ops are skipped);
    output is float32 [B,C,H,W] in [0,1]. The generator must live on the images' device.

    Every factor is drawn per sample; only the order of the four jitter ops is drawn once per call and
    shared by the batch (as in kornia), which keeps the batch to four vectorised ops.
    """

    def __init__(
        self,
        crop_scale: Sequence[float] | None = (0.08, 1.0),
        crop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        jitter_strength: float = 0.5,
        grayscale_p: float = 0.2,
        blur_p: float = 0.0,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_kernel_frac: float = 0.1,
    ) -> None:
        super().__init__()
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p),
                        ("blur_p", blur_p)):
            _check(0 <= p <= 1, name, p, "a probability in [0, 1]")
        _check(jitter_strength >= 0, "jitter_strength", jitter_strength, ">= 0")
        _check(blur_kernel_frac > 0, "blur_kernel_frac", blur_kernel_frac, "> 0")
        self.crop_scale = None if crop_scale is None else _pair("crop_scale", crop_scale)
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            _check(0 < lo <= hi <= 1, "crop_scale", crop_scale, "(lo, hi) with 0 < lo <= hi <= 1")
        self.crop_ratio = _pair("crop_ratio", crop_ratio)
        _check(0 < self.crop_ratio[0] <= self.crop_ratio[1], "crop_ratio", crop_ratio,
               "(lo, hi) with 0 < lo <= hi")
        self.blur_sigma = _pair("blur_sigma", blur_sigma)
        _check(0 < self.blur_sigma[0] <= self.blur_sigma[1], "blur_sigma", blur_sigma,
               "(lo, hi) with 0 < lo <= hi")
        self.flip_p = float(flip_p)
        self.jitter_p = float(jitter_p)
        self.jitter_strength = float(jitter_strength)
        self.grayscale_p = float(grayscale_p)
        self.blur_p = float(blur_p)
        self.blur_kernel_frac = float(blur_kernel_frac)

    def extra_repr(self) -> str:
        return (f"crop_scale={self.crop_scale}, crop_ratio={self.crop_ratio}, flip_p={self.flip_p}, "
                f"jitter_p={self.jitter_p}, jitter_strength={self.jitter_strength}, "
                f"grayscale_p={self.grayscale_p}, blur_p={self.blur_p}, blur_sigma={self.blur_sigma}, "
                f"blur_kernel_frac={self.blur_kernel_frac}")

    def forward(self, images: Tensor, generator: torch.Generator) -> Tensor:
        x = _to_float(images)
        sampler = _Sampler(generator, x.device, x.shape[0])
        # Draws happen in a fixed order and only for enabled ops, so a seed reproduces the output.
        x = self._crop_flip(x, sampler)
        if x.shape[1] == 3:
            if self.jitter_p > 0 and self.jitter_strength > 0:
                x = self._jitter(x, sampler)
            if self.grayscale_p > 0:
                x = _select(sampler.bernoulli(self.grayscale_p), rgb_to_grayscale(x).expand_as(x), x)
        if self.blur_p > 0:
            x = self._blur(x, sampler)
        # Out of place: with every op disabled x may be the caller's float tensor.
        return x.clamp(0, 1)

    def views(self, images: Tensor, n: int, generator: torch.Generator) -> list[Tensor]:
        """``n`` independently augmented views of the batch."""
        return [self(images, generator) for _ in range(n)]

    def _crop_flip(self, x: Tensor, sampler: _Sampler) -> Tensor:
        if self.crop_scale is None:
            if self.flip_p == 0:
                return x
            return _select(sampler.bernoulli(self.flip_p), x.flip(-1), x)
        h, w = x.shape[2:]
        theta = _crop_flip_theta(sampler, h, w, self.crop_scale, self.crop_ratio, self.flip_p)
        # The crop is never larger than the image, so resampling to H x W only upsamples: no aliasing.
        # Border padding: the outer half-pixel of a full-width crop interpolates towards outside.
        grid = _axis_aligned_grid(theta, h, w)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _jitter(self, x: Tensor, sampler: _Sampler) -> Tensor:
        s = self.jitter_strength
        factor_lo, factor_hi = max(0.0, 1 - 0.8 * s), 1 + 0.8 * s
        selected = sampler.bernoulli(self.jitter_p)
        ops = (
            (adjust_brightness, sampler.uniform(factor_lo, factor_hi)),
            (adjust_contrast, sampler.uniform(factor_lo, factor_hi)),
            (adjust_saturation, sampler.uniform(factor_lo, factor_hi)),
            (adjust_hue, sampler.uniform(-0.2 * s, 0.2 * s)),
        )
        order = torch.randperm(len(ops), generator=sampler.generator, device=sampler.device).tolist()
        jittered = x
        for i in order:
            op, factor = ops[i]
            jittered = op(jittered, factor)
        return _select(selected, jittered, x)

    def _blur(self, x: Tensor, sampler: _Sampler) -> Tensor:
        selected = sampler.bernoulli(self.blur_p)
        sigma = sampler.uniform(*self.blur_sigma)
        size = blur_kernel_size(x.shape[2], x.shape[3], self.blur_kernel_frac)
        return _select(selected, gaussian_blur(x, sigma, size), x)


def _to_float(images: Tensor) -> Tensor:
    """Validate the batch and convert uint8 to float32 in [0, 1] (x / 255 exactly)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise UserError(f"augment expects images [B, C, H, W] with C = 1 or 3, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255)
    if not images.is_floating_point():
        raise UserError(f"augment expects uint8 or float images, got {images.dtype}")
    return images.to(torch.float32)
