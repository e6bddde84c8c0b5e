"""Rasterise one scene of the world into an RGB image.

A :class:`Scene` holds every sampled attribute of one image (class, style, colour, fill,
background, pose, factors). :func:`render` turns it into a ``uint8`` array of shape
``(size, size, 3)``. Work happens on a supersampled grid (``SUPERSAMPLE`` × ``size``) and is
box-averaged at the end, which anti-aliases edges. All randomness (textures, clutter) comes
from the ``rng`` passed in, so a scene plus a seed always gives the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from matplotlib.path import Path

from .shapes import SHAPES

SUPERSAMPLE = 2

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.95, 0.52, 0.08),
    "yellow": (0.95, 0.85, 0.15),
    "green": (0.18, 0.65, 0.20),
    "blue": (0.12, 0.30, 0.85),
    "purple": (0.52, 0.18, 0.70),
    "pink": (0.96, 0.50, 0.70),
    "white": (0.94, 0.94, 0.92),
    "black": (0.08, 0.08, 0.09),
    "brown": (0.48, 0.28, 0.12),
    "gray": (0.52, 0.52, 0.54),
}

# Photo-style natural backgrounds: (base colour, second colour) mixed by smooth noise.
NATURAL_BACKGROUNDS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "grass": ((0.30, 0.55, 0.20), (0.45, 0.62, 0.25)),
    "sky": ((0.50, 0.72, 0.95), (0.85, 0.90, 0.97)),
    "sand": ((0.86, 0.78, 0.58), (0.74, 0.64, 0.45)),
    "forest": ((0.14, 0.30, 0.12), (0.35, 0.26, 0.14)),
    "water": ((0.15, 0.42, 0.62), (0.28, 0.58, 0.72)),
    "snow": ((0.90, 0.92, 0.95), (0.78, 0.82, 0.88)),
}
UNUSUAL_BACKGROUNDS = ("tiles", "carpet", "stripes", "dark", "neon")
STYLES = ("photo", "sketch", "cartoon", "pattern", "painting", "mosaic")
FACTORS = ("rotation", "off_centre", "occluder", "clutter", "background")


@dataclass
class Scene:
    """Every attribute of one image. Angles in degrees; positions and scale in [-1, 1] units."""

    label: int
    style: str
    colour: str
    fill: str
    background: str
    rotation: float = 0.0
    scale: float = 0.65  # object radius as a fraction of the image half-width
    cx: float = 0.0
    cy: float = 0.0
    light: float = 45.0  # direction the light comes from (photo shading)
    brightness: float = 1.0
    factors: tuple[str, ...] = field(default_factory=tuple)


@lru_cache(maxsize=8)
def _grid(n: int) -> np.ndarray:
    """(n*n, 2) pixel centres of an n×n grid in [-1, 1] coordinates, y up, row-major."""
    coords = ((np.arange(n) + 0.5) / n * 2 - 1).astype(np.float32)
    x, y = np.meshgrid(coords, -coords)
    return np.stack([x.ravel(), y.ravel()], 1)


@lru_cache(maxsize=32)
def _upsample_matrix(k: int, n: int) -> np.ndarray:
    """(n, k) bilinear interpolation weights from k control points to n pixels."""
    pos = np.linspace(0, k - 1, n)
    lo = np.clip(np.floor(pos).astype(int), 0, k - 2)
    frac = pos - lo
    weights = np.zeros((n, k))
    weights[np.arange(n), lo] = 1 - frac
    weights[np.arange(n), lo + 1] = frac
    return weights.astype(np.float32)


def smooth_noise(rng: np.random.Generator, n: int, k: int, channels: int = 1) -> np.ndarray:
    """(n, n, channels) noise in [0, 1], smooth at scale n / k."""
    up = _upsample_matrix(k, n)
    control = rng.random((k, k, channels), dtype=np.float32)
    return np.einsum("ik,klc,jl->ijc", up, control, up, optimize=False)


def shape_mask(scene: Scene, n: int, wobble: float = 0.0, rng=None) -> np.ndarray:
    """(n, n) bool mask of the scene's object on an n×n grid."""
    shape = SHAPES[scene.label]
    theta = np.deg2rad(scene.rotation)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    points = _grid(n)
    mask = np.zeros(n * n, dtype=bool)
    for polygons, value in ((shape.add, True), (shape.cut, False)):
        for poly in polygons:
            verts = poly
            if wobble and rng is not None:
                verts = verts + rng.normal(0, wobble, verts.shape)
            verts = verts @ rot.T * scene.scale + np.array([scene.cx, scene.cy])
            inside = Path(verts).contains_points(points)
            mask = mask | inside if value else mask & ~inside
    return mask.reshape(n, n)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square binary erosion by `radius` pixels (pixels outside the image count as empty)."""
    out = mask.copy()
    for axis in (0, 1):
        shifted = out.copy()
        for step in range(1, radius + 1):
            for sign in (1, -1):
                rolled = np.roll(out, sign * step, axis=axis)
                edge = [slice(None)] * 2
                edge[axis] = slice(0, step) if sign > 0 else slice(-step, None)
                rolled[tuple(edge)] = False
                shifted &= rolled
        out = shifted
    return out


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of `mask` within `width` pixels of its border."""
    return mask & ~_erode(mask, width)


def _jitter(rng, rgb, amount=0.06) -> np.ndarray:
    return np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0, 1).astype(np.float32)


def background(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n, 3) float background texture."""
    if name in NATURAL_BACKGROUNDS:
        base, second = (np.asarray(c) for c in NATURAL_BACKGROUNDS[name])
        mix = smooth_noise(rng, n, 5)
        img = base * (1 - mix) + second * mix
        return img + 0.035 * rng.standard_normal((n, n, 1), dtype=np.float32)
    if name == "paper":
        grain = 0.015 * rng.standard_normal((n, n, 1), dtype=np.float32)
        return np.repeat(rng.uniform(0.9, 0.98) + grain, 3, axis=2)
    if name == "flat":
        colour = _jitter(rng, list(COLOURS.values())[rng.integers(len(COLOURS))], 0.1)
        return np.broadcast_to(0.35 + 0.65 * colour, (n, n, 3)).copy()
    if name == "painted":
        palette = rng.random((3, 3))
        mix = smooth_noise(rng, n, 4, 2)
        img = palette[0] * mix[..., :1] + palette[1] * mix[..., 1:] + palette[2] * 0.3
        return img / (mix.sum(-1, keepdims=True) + 0.3)
    return _unusual_background(name, rng, n)


def _unusual_background(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    ys, xs = np.mgrid[0:n, 0:n] / n
    a, b = rng.random(3), rng.random(3)
    if name == "tiles":
        period = rng.uniform(0.15, 0.3)
        checker = ((xs // period + ys // period) % 2)[..., None]
        return a * checker + b * (1 - checker)
    if name == "carpet":
        return rng.random((n // 3 + 1, n // 3 + 1, 3)).repeat(3, 0).repeat(3, 1)[:n, :n]
    if name == "stripes":
        angle = rng.uniform(0, np.pi)
        wave = (np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * rng.uniform(15, 30)) > 0)
        return a * wave[..., None] + b * (1 - wave[..., None])
    if name == "dark":
        return 0.05 + 0.08 * smooth_noise(rng, n, 4, 3)
    if name == "neon":
        hue = np.array([rng.random() > 0.5, rng.random() > 0.5, 1.0])
        return np.broadcast_to(0.2 + 0.8 * hue * rng.uniform(0.7, 1.0, 3), (n, n, 3)).copy()
    raise ValueError(f"unknown background {name!r}")


def _fill_photo(scene, rng, mask, colour, n):
    pts = _grid(n).reshape(n, n, 2) - np.array([scene.cx, scene.cy])
    light = np.deg2rad(scene.light)
    along = (pts @ np.array([np.cos(light), np.sin(light)])) / max(scene.scale, 1e-3)
    shade = np.clip(0.72 + 0.3 * along, 0.35, 1.15)[..., None]
    if scene.fill == "gradient":
        tint = _jitter(rng, colour, 0.25)
        t = np.clip(0.5 + 0.5 * along, 0, 1)[..., None]
        return colour * (1 - t) + tint * t
    if scene.fill == "speckled":
        return colour * shade * (0.8 + 0.4 * rng.random((n, n, 1), dtype=np.float32))
    return colour * shade


def _fill_pattern(scene, rng, colour, n):
    ys, xs = np.mgrid[0:n, 0:n] / n
    second = _jitter(rng, list(COLOURS.values())[rng.integers(len(COLOURS))], 0.1)
    freq = rng.uniform(14, 24)
    if scene.fill == "stripes":
        angle = rng.uniform(0, np.pi)
        on = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * freq) > 0
    elif scene.fill == "checks":
        on = (np.floor(xs * freq / 3) + np.floor(ys * freq / 3)) % 2 > 0
    else:  # dots
        on = (np.sin(xs * freq) * np.sin(ys * freq)) > 0.35
    on = on[..., None]
    return colour * on + second * (1 - on)


def render(scene: Scene, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Render `scene` to a (size, size, 3) uint8 RGB image."""
    n = size * SUPERSAMPLE
    style = scene.style
    colour = _jitter(rng, COLOURS[scene.colour])
    img = background(scene.background, rng, n)
    if "clutter" in scene.factors:
        _draw_clutter(img, rng, n)
    wobble = 0.04 if style in ("sketch", "painting") else 0.0
    mask = shape_mask(scene, n, wobble, rng)
    line = max(1, round(SUPERSAMPLE * (0.6 if style == "sketch" else 1.0)))
    if style in ("photo", "mosaic"):
        img[mask] = _fill_photo(scene, rng, mask, colour, n)[mask]
    elif style == "sketch":
        pen = rng.uniform(0.05, 0.35)
        if scene.fill == "hatched":
            ys, xs = np.mgrid[0:n, 0:n]
            hatch = mask & (((xs + ys) % (3 * SUPERSAMPLE)) < SUPERSAMPLE // 2 + 1)
            img[hatch] = img[hatch] * 0.5 + pen * 0.5
        img[outline(mask, line)] = pen
    elif style == "cartoon":
        img[mask] = 0.2 + 0.8 * colour
        img[outline(mask, 2 * line)] = 0.05
    elif style == "pattern":
        img[mask] = _fill_pattern(scene, rng, colour, n)[mask]
        img[outline(mask, line)] *= 0.4
    elif style == "painting":
        strokes = smooth_noise(rng, n, 6, 3) - 0.5
        img[mask] = np.clip(colour + 0.45 * strokes, 0, 1)[mask]
    else:
        raise ValueError(f"unknown style {style!r}; known: {STYLES}")
    if "occluder" in scene.factors:
        _draw_occluder(img, rng, scene, n)
    img = img * scene.brightness
    out = img.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean((1, 3))
    if style == "painting":
        out = _blur(out)
    elif style == "mosaic":
        block = next(b for b in range(max(2, size // 8), 1, -1) if size % b == 0)
        small = out.reshape(size // block, block, size // block, block, 3).mean((1, 3))
        out = small.repeat(block, 0).repeat(block, 1)
        out[::block] *= 0.7
        out[:, ::block] *= 0.7
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def _blur(img: np.ndarray) -> np.ndarray:
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    acc = sum(padded[i : i + img.shape[0], j : j + img.shape[1]] for i in range(3) for j in range(3))
    return acc / 9


def _draw_clutter(img: np.ndarray, rng: np.random.Generator, n: int) -> None:
    ys, xs = np.mgrid[0:n, 0:n] / n * 2 - 1
    for _ in range(rng.integers(3, 7)):
        cx, cy, r = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.08, 0.22)
        colour = rng.random(3)
        if rng.random() < 0.5:
            blob = (xs - cx) ** 2 + (ys - cy) ** 2 < r**2
        else:
            blob = (np.abs(xs - cx) < r * 1.6) & (np.abs(ys - cy) < r * 0.35)
        img[blob] = colour


def _draw_occluder(img: np.ndarray, rng: np.random.Generator, scene: Scene, n: int) -> None:
    ys, xs = np.mgrid[0:n, 0:n] / n * 2 - 1
    ys = -ys
    for _ in range(rng.integers(1, 3)):
        ox = scene.cx + rng.uniform(-0.6, 0.6) * scene.scale
        oy = scene.cy + rng.uniform(-0.6, 0.6) * scene.scale
        w, h = rng.uniform(0.2, 0.45, 2) * scene.scale * 1.6
        box = (np.abs(xs - ox) < w / 2) & (np.abs(ys - oy) < h / 2)
        img[box] = rng.uniform(0.1, 0.9) * np.ones(3) * rng.uniform(0.7, 1.0, 3)
