"""The embedded default dataset "shapes": one coloured object on a cluttered, noisy background.

Images are rendered procedurally and fully vectorised from signed distance functions (SDFs) on a
pixel grid whose coordinates are in units of the image side, so every feature scales with ``size``.
All per-image parameters are drawn up front from one seeded CPU generator and the pixel noise is
a hash of (per-image key, pixel index), so the output depends only on ``(n, seed, size)`` and not
on how the images are split into chunks.

Coordinates: ``x`` runs along image columns (left to right), ``y`` along rows (top to bottom).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor

from mtlssl.data.cache import cached, images_and_targets, resolve_cache
from mtlssl.data.image_set import Dataset, ImageSet
from mtlssl.errors import UserError
from mtlssl.tasks import TaskSpec

SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "semicircle")
COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
SHAPES_TASKS: list[TaskSpec] = [
    TaskSpec("shape", "multiclass", len(SHAPE_NAMES)),
    TaskSpec("colour", "multiclass", len(COLOUR_NAMES)),
    TaskSpec("size", "regression", 1),
    TaskSpec("position", "regression", 2),
    TaskSpec("outlined", "binary", 1),
]
# The object's radius as a fraction of the image side; the "size" target maps this range to [0, 1].
SCALE_RANGE: tuple[float, float] = (0.15, 0.35)

# Saturated hues, far from the grey-ish background and clutter, so the colour label stays unambiguous.
_PALETTE = torch.tensor(
    [
        [0.90, 0.15, 0.15],  # red
        [0.15, 0.80, 0.15],  # green
        [0.20, 0.35, 0.95],  # blue (lifted green/red so it stays visible on dark backgrounds)
        [0.90, 0.85, 0.15],  # yellow
        [0.90, 0.15, 0.85],  # magenta
        [0.15, 0.85, 0.90],  # cyan
    ]
)
_OUTLINE = 0.25  # width of a hollow object's band, as a fraction of its radius
_MIN_CLUTTER, _MAX_CLUTTER = 3, 6
_NOISE_SIGMA = 0.04
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class _Params:
    """Every random choice for a batch of images; row i describes image i."""

    shape: Tensor  # [n] int64 class
    colour: Tensor  # [n] int64 class
    scale: Tensor  # [n] radius of the circle enclosing the object
    rotation: Tensor  # [n, 2] (cos, sin) of the object's rotation
    centre: Tensor  # [n, 2] (x, y)
    outlined: Tensor  # [n] bool
    rgb: Tensor  # [n, 3] object colour after brightness and jitter
    bg_rgb: Tensor  # [n, 2, 3] the background gradient's end colours
    bg_dir: Tensor  # [n, 2] unit direction of the gradient
    clutter_a: Tensor  # [n, K, 2] capsule start
    clutter_b: Tensor  # [n, K, 2] capsule end (equal to the start for a blob)
    clutter_radius: Tensor  # [n, K]
    clutter_rgb: Tensor  # [n, K, 3]
    clutter_on: Tensor  # [n, K] bool: the image draws this item
    noise_key: Tensor  # [n] int64 in [0, 2**32)

    def rows(self, start: int, stop: int) -> _Params:
        return _Params(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})


def render_shapes(n: int, seed: int, size: int = 32, chunk: int = 512) -> tuple[Tensor, dict[str, Tensor]]:
    """Render ``n`` images and their targets, bit-identical for the same ``(n, seed, size)``.

    Returns uint8 images ``[n, 3, size, size]`` and targets: ``shape`` int64 ``[n]``, ``colour``
    int64 ``[n]``, ``size`` float32 ``[n, 1]`` (the object's radius rescaled from ``SCALE_RANGE``
    to [0, 1]), ``position`` float32 ``[n, 2]`` (x, y of the object's centre as fractions of the image
    side) and ``outlined`` float32 ``[n, 1]`` (1. for a hollow object). Images are rendered
    ``chunk`` at a time, which bounds memory and does not change the result (a few hundred keeps
    the temporaries cache-sized: 4096 renders about 3x slower at 32 px).
    """
    if n < 0:
        raise UserError(f"shapes: n={n} images is negative; ask for n >= 0")
    if size < 8:
        raise UserError(f"shapes: size={size} px is too small to draw an object; use size >= 8")
    if chunk < 1:
        raise UserError(f"shapes: chunk={chunk} must be at least 1")
    params = _draw_params(n, seed)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        images[start:stop] = _render(params.rows(start, stop), size)
    return images, _targets(params)


def _draw_params(n: int, seed: int) -> _Params:
    g = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=g)

    shape = torch.randint(len(SHAPE_NAMES), (n,), generator=g)
    colour = torch.randint(len(COLOUR_NAMES), (n,), generator=g)
    scale = uniform(*SCALE_RANGE)
    angle = uniform(0.0, 2 * math.pi)
    rotation = _direction(angle)
    # Every shape fits in the circle of radius `scale`, so this margin keeps it inside the image.
    centre = scale[:, None] + (1 - 2 * scale[:, None]) * torch.rand(n, 2, generator=g)
    outlined = torch.rand(n, generator=g) < 0.5
    brightness = uniform(0.75, 1.0, 1)
    rgb = (_PALETTE[colour] * brightness + uniform(-0.05, 0.05, 3)).clamp(0, 1)

    # Background and clutter: grey levels with a faint tint, so they never read as a palette colour.
    bg_rgb = uniform(0.1, 0.45, 2, 1) + uniform(-0.05, 0.05, 2, 3)
    bg_dir = _direction(uniform(0.0, 2 * math.pi))

    k = _MAX_CLUTTER
    count = torch.randint(_MIN_CLUTTER, _MAX_CLUTTER + 1, (n, 1), generator=g)
    clutter_on = torch.arange(k) < count
    is_blob = torch.rand(n, k, generator=g) < 0.4
    mid = torch.rand(n, k, 2, generator=g)
    half = uniform(0.08, 0.2, k)[..., None] * _direction(uniform(0.0, 2 * math.pi, k))
    half = half * ~is_blob[..., None]
    clutter_radius = torch.where(is_blob, uniform(0.02, 0.06, k), uniform(0.012, 0.025, k))
    clutter_rgb = (uniform(0.15, 0.7, k, 1) + uniform(-0.08, 0.08, k, 3)).clamp(0, 1)

    noise_key = torch.randint(0, 2**32, (n,), generator=g)
    return _Params(
        shape, colour, scale, rotation, centre, outlined, rgb, bg_rgb, bg_dir,
        mid - half, mid + half, clutter_radius, clutter_rgb, clutter_on, noise_key,
    )  # fmt: skip


def _direction(angle: Tensor) -> Tensor:
    """Unit vectors [..., 2]; in float64 so that last-bit differences between cos/sin kernels
    (vectorised or not, by thread count) vanish on rounding to float32."""
    angle = angle.double()
    return torch.stack([angle.cos(), angle.sin()], dim=-1).float()


def _targets(p: _Params) -> dict[str, Tensor]:
    return {
        "shape": p.shape.clone(),
        "colour": p.colour.clone(),
        "size": ((p.scale - SCALE_RANGE[0]) / (SCALE_RANGE[1] - SCALE_RANGE[0]))[:, None].float(),
        "position": p.centre.float().clone(),
        "outlined": p.outlined.float()[:, None],
    }


def _render(p: _Params, size: int) -> Tensor:
    """uint8 images [B, 3, size, size] for the batch of parameters ``p``."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    x, y = coords.view(1, 1, size), coords.view(1, size, 1)

    # Background gradient along a random direction, t in [0, 1] across the image.
    t = 0.5 + ((x - 0.5) * p.bg_dir[:, 0, None, None] + (y - 0.5) * p.bg_dir[:, 1, None, None]) / math.sqrt(2)
    lo, hi = p.bg_rgb[:, 0, :, None, None], p.bg_rgb[:, 1, :, None, None]
    img = lo + (hi - lo) * t[:, None]

    for i in range(_MAX_CLUTTER):
        sdf = _capsule_sdf(x, y, p.clutter_a[:, i], p.clutter_b[:, i], p.clutter_radius[:, i])
        alpha = _coverage(sdf, size) * p.clutter_on[:, i, None, None]
        img = _over(img, p.clutter_rgb[:, i], alpha)

    img = _over(img, p.rgb, _object_alpha(p, x, y, size))
    img = img + _NOISE_SIGMA * _hash_normal(p.noise_key, img.shape[1:])
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _object_alpha(p: _Params, x: Tensor, y: Tensor, size: int) -> Tensor:
    """Antialiased coverage [B, H, W] of each image's object, filled or hollow."""
    dx, dy = x - p.centre[:, 0, None, None], y - p.centre[:, 1, None, None]
    cos, sin = p.rotation[:, 0, None, None], p.rotation[:, 1, None, None]
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # pixel in the object's own frame
    s = p.scale[:, None, None]
    sdf = torch.empty_like(u)
    for k, shape_sdf in enumerate(_SHAPE_SDFS):
        rows = p.shape == k
        sdf[rows] = shape_sdf(u[rows], v[rows], s[rows])
    alpha = _coverage(sdf, size)
    band = alpha * (1 - _coverage(sdf + _OUTLINE * s, size))
    return torch.where(p.outlined[:, None, None], band, alpha)


# SDFs in the object's frame; each shape fits in the circle of radius s around the origin.
def _circle(u: Tensor, v: Tensor, s: Tensor) -> Tensor:
    return _length(u, v) - s


def _square(u: Tensor, v: Tensor, s: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) - 0.7 * s


def _triangle(u: Tensor, v: Tensor, s: Tensor) -> Tensor:
    # Equilateral, circumradius s: inside all three edges, each at the inradius s/2 from the centre.
    edges = [u * math.cos(a) + v * math.sin(a) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    return torch.maximum(torch.maximum(edges[0], edges[1]), edges[2]) - 0.5 * s


def _cross(u: Tensor, v: Tensor, s: Tensor) -> Tensor:
    # Bars wide enough that a hollow cross keeps a visible hole inside its band.
    half_len, half_width = 0.9 * s, 0.4 * s
    bar_u = torch.maximum(u.abs() - half_len, v.abs() - half_width)
    bar_v = torch.maximum(v.abs() - half_len, u.abs() - half_width)
    return torch.minimum(bar_u, bar_v)


def _semicircle(u: Tensor, v: Tensor, s: Tensor) -> Tensor:
    # Disc of radius r cut along its diameter, shifted so its bounding box is centred on the origin.
    r = s / math.hypot(1.0, 0.5)
    return torch.maximum(_length(u, v - 0.5 * r) - r, v - 0.5 * r)


_SHAPE_SDFS = (_circle, _square, _triangle, _cross, _semicircle)


def _capsule_sdf(x: Tensor, y: Tensor, a: Tensor, b: Tensor, radius: Tensor) -> Tensor:
    """Distance [B, H, W] to the segment a-b minus ``radius``: a thick line, or a disc when a == b."""
    ax, ay = a[:, 0, None, None], a[:, 1, None, None]
    ex, ey = (b - a)[:, 0, None, None], (b - a)[:, 1, None, None]
    px, py = x - ax, y - ay
    t = ((px * ex + py * ey) / (ex * ex + ey * ey).clamp_min(1e-12)).clamp(0, 1)
    return _length(px - t * ex, py - t * ey) - radius[:, None, None]


def _length(u: Tensor, v: Tensor) -> Tensor:
    # Not torch.hypot: its vectorised and scalar kernels may differ in the last bit, and which one
    # an element meets depends on the chunk; sqrt, + and * are exact in both.
    return torch.sqrt(u * u + v * v)


def _coverage(sdf: Tensor, size: int) -> Tensor:
    """Antialiased alpha with a soft edge about one pixel wide."""
    return (0.5 - sdf * size).clamp(0, 1)


def _over(img: Tensor, rgb: Tensor, alpha: Tensor) -> Tensor:
    """Composite a flat colour [B, 3] with coverage [B, H, W] over images [B, 3, H, W]."""
    alpha = alpha[:, None]
    return img + (rgb[:, :, None, None] - img) * alpha


def _hash_normal(key: Tensor, shape: torch.Size) -> Tensor:
    """Standard normal noise [B, *shape], a pure function of each image's key and the pixel index."""
    count = math.prod(shape)
    pair = _fmix32(torch.arange((count + 1) // 2, dtype=torch.int64))
    h = _fmix32(key[:, None] ^ pair)
    # Box-Muller on two 16-bit uniforms per hash, giving two normals. The transcendental parts come
    # from fixed tables (log, cos and sin kernels could differ in the last bit between chunkings).
    radius, cos, sin = _box_muller_tables()
    high, low = h >> 16, h & 0xFFFF
    normal = torch.cat([radius[high] * cos[low], radius[high] * sin[low]], dim=1)
    return normal[:, :count].view(-1, *shape)


@functools.cache
def _box_muller_tables() -> tuple[Tensor, Tensor, Tensor]:
    """sqrt(-2 log u1) for u1 = (k + 1) / 2**16, and cos, sin of 2 pi k / 2**16, for k < 2**16."""
    k = torch.arange(65536, dtype=torch.float64)
    radius = torch.sqrt(-2 * torch.log((k + 1) / 65536))
    theta = 2 * math.pi * k / 65536
    return radius.float(), theta.cos().float(), theta.sin().float()


def _fmix32(h: Tensor) -> Tensor:
    """MurmurHash3's 32-bit finaliser on int64 values in [0, 2**32)."""
    h = h ^ (h >> 16)
    h = _mul32(h, 0x85EBCA6B)
    h = h ^ (h >> 13)
    h = _mul32(h, 0xC2B2AE35)
    return h ^ (h >> 16)


def _mul32(h: Tensor, c: int) -> Tensor:
    """(h * c) mod 2**32, split into 16-bit halves of c so int64 never overflows."""
    return (h * (c & 0xFFFF) + (((h * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


# Each split is rendered from its own seed, derived from data.seed, so growing one split never changes another.
_SPLIT_OFFSETS = {"unlabeled": 0, "train": 1, "val": 2, "test": 3}


def shapes(
    seed: int = 0,
    size: int = 32,
    n_unlabeled: int = 20000,
    n_train: int = 1500,
    n_val: int = 1000,
    n_test: int = 2000,
    cache_dir: str | None = "auto",
    channels: int = 3,
    mean: Sequence[float] = (0.3, 0.3, 0.3),
    std: Sequence[float] = (0.14, 0.14, 0.14),
) -> Dataset:
    """The ``shapes`` dataset: a large unlabelled pool for pretraining and small labelled splits (the
    few-label regime where pretraining matters). The pool's labels are dropped: pretraining never sees them.

    ``cache_dir``: "auto" for the default cache folder, a path, or None to render every time.
    """
    if channels != 3:
        raise UserError(f"data.channels={channels}: shapes images are RGB; set data.channels=3")
    counts = {"unlabeled": n_unlabeled, "train": n_train, "val": n_val, "test": n_test}
    if any(n < 0 for n in counts.values()):
        raise UserError(f"shapes split sizes must be >= 0, got {counts}")
    cache = resolve_cache(cache_dir)
    splits = {}
    for name, n in counts.items():
        split_seed = seed * len(_SPLIT_OFFSETS) + _SPLIT_OFFSETS[name]
        key = {"name": "shapes", "version": 1, "n": n, "seed": split_seed, "size": size}
        images, targets = cached(key, lambda n=n, s=split_seed: render_shapes(n, s, size), cache,
                                 images_and_targets)
        splits[name] = ImageSet(images, {} if name == "unlabeled" else targets)
    return Dataset("shapes", list(SHAPES_TASKS), splits, tuple(mean), tuple(std))
