"""Distributions over scenes: the training distributions and the evaluation shifts.

A :class:`SceneDistribution` says how the attributes of a :class:`~.render.Scene` are drawn.
The registry :data:`DISTRIBUTIONS` holds the named ones:

- ``narrow``: ImageNet-like: photo style, canonical pose, natural backgrounds.
- ``diverse``: web-like: a mixture of styles, and object-net-like factors on some images.
- ``v2``: a re-collection of ``narrow`` with a subtle change in the attribute distribution
  (smaller, dimmer objects, more rotation, other background frequencies).
- ``sketch``: line drawings on paper.
- ``rendition``: cartoons, pattern fills, paintings, and mosaics (a rendition style that no
  training distribution contains).
- ``objectnet``: photos with 1-3 factor shifts each (unusual rotation, off-centre, occluders,
  clutter, unusual backgrounds).
- ``adversarial_pool``: hard photos from which the ``adversarial`` set is filtered.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .render import COLOURS, FACTORS, NATURAL_BACKGROUNDS, STYLES, UNUSUAL_BACKGROUNDS, Scene

FILLS: dict[str, tuple[str, ...]] = {
    "photo": ("shaded", "gradient", "speckled"),
    "mosaic": ("shaded", "gradient"),
    "sketch": ("outline", "hatched"),
    "cartoon": ("flat",),
    "pattern": ("stripes", "checks", "dots"),
    "painting": ("brush",),
}
STYLE_BACKGROUNDS = {"sketch": "paper", "cartoon": "flat", "pattern": "paper", "painting": "painted"}


@dataclass
class SceneDistribution:
    """How to draw a scene. Weights need not sum to 1; they are normalised."""

    styles: dict[str, float] = field(default_factory=lambda: {"photo": 1.0})
    backgrounds: dict[str, float] = field(
        default_factory=lambda: {name: 1.0 for name in NATURAL_BACKGROUNDS}
    )
    factor_rate: float = 0.0  # probability that an image gets object-net-like factors
    factor_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FACTORS, 1.0))
    max_factors: int = 2
    rotation: float = 15.0  # canonical pose: uniform in [-rotation, rotation] degrees
    scale: tuple[float, float] = (0.55, 0.8)
    centre_jitter: float = 0.12
    brightness: tuple[float, float] = (0.9, 1.1)
    light: tuple[float, float] = (20.0, 160.0)  # light from above, as in most photos

    def validate(self) -> "SceneDistribution":
        for name, weights, known in (
            ("styles", self.styles, STYLES),
            ("backgrounds", self.backgrounds, tuple(NATURAL_BACKGROUNDS) + UNUSUAL_BACKGROUNDS),
            ("factor_weights", self.factor_weights, FACTORS),
        ):
            unknown = sorted(set(weights) - set(known))
            if unknown:
                raise ValueError(f"{name}: unknown names {unknown}; known: {list(known)}")
            if not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
                raise ValueError(f"{name}: weights must be non-negative and not all zero, got {weights}")
        if not 0.0 <= self.factor_rate <= 1.0:
            raise ValueError(f"factor_rate must be in [0, 1], got {self.factor_rate}")
        if not 1 <= self.max_factors <= len(FACTORS):
            raise ValueError(f"max_factors must be in [1, {len(FACTORS)}], got {self.max_factors}")
        return self

    def sample(self, rng: np.random.Generator, label: int) -> Scene:
        """Draw the attributes of one image of class `label`."""
        style = _choice(rng, self.styles)
        factors: tuple[str, ...] = ()
        if rng.random() < self.factor_rate:
            k = int(rng.integers(1, self.max_factors + 1))
            factors = _choose_k(rng, self.factor_weights, k)
        rotation = rng.uniform(-self.rotation, self.rotation)
        if "rotation" in factors:
            rotation = rng.uniform(60, 300)
        scale = rng.uniform(*self.scale)
        cx, cy = rng.uniform(-self.centre_jitter, self.centre_jitter, 2)
        if "off_centre" in factors:
            scale *= 0.8
            angle = rng.uniform(0, 2 * np.pi)
            radius = rng.uniform(0.55, 0.8)
            cx, cy = radius * np.cos(angle), radius * np.sin(angle)
        if style in STYLE_BACKGROUNDS:
            bg = STYLE_BACKGROUNDS[style]
        elif "background" in factors:
            bg = UNUSUAL_BACKGROUNDS[rng.integers(len(UNUSUAL_BACKGROUNDS))]
        else:
            bg = _choice(rng, self.backgrounds)
        fills = FILLS[style]
        return Scene(
            label=label,
            style=style,
            colour=list(COLOURS)[rng.integers(len(COLOURS))],
            fill=fills[rng.integers(len(fills))],
            background=bg,
            rotation=float(rotation),
            scale=float(scale),
            cx=float(cx),
            cy=float(cy),
            light=float(rng.uniform(*self.light)),
            brightness=float(rng.uniform(*self.brightness)),
            factors=factors,
        )


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.asarray([weights[k] for k in names], dtype=float)
    return names[rng.choice(len(names), p=p / p.sum())]


def _choose_k(rng: np.random.Generator, weights: dict[str, float], k: int) -> tuple[str, ...]:
    names = [n for n, w in weights.items() if w > 0]
    p = np.asarray([weights[n] for n in names], dtype=float)
    k = min(k, len(names))
    picked = rng.choice(len(names), size=k, replace=False, p=p / p.sum())
    return tuple(sorted(names[i] for i in picked))


NARROW = SceneDistribution()
DIVERSE = SceneDistribution(
    styles={"photo": 0.5, "sketch": 0.125, "cartoon": 0.125, "pattern": 0.125, "painting": 0.125},
    factor_rate=0.3,
)
DISTRIBUTIONS: dict[str, SceneDistribution] = {
    "narrow": NARROW,
    "diverse": DIVERSE,
    "v2": replace(
        NARROW,
        backgrounds={"grass": 0.5, "sky": 0.5, "sand": 1.0, "forest": 2.0, "water": 2.0, "snow": 2.0},
        scale=(0.45, 0.7),
        rotation=25.0,
        centre_jitter=0.2,
        brightness=(0.75, 1.0),
    ),
    "sketch": replace(NARROW, styles={"sketch": 1.0}),
    "rendition": replace(
        NARROW, styles={"cartoon": 1.0, "pattern": 1.0, "painting": 1.0, "mosaic": 1.0}
    ),
    "objectnet": replace(NARROW, factor_rate=1.0, max_factors=3),
    "adversarial_pool": replace(
        NARROW, factor_rate=0.5, max_factors=2, scale=(0.35, 0.85), rotation=40.0,
        centre_jitter=0.3, brightness=(0.6, 1.1),
    ),
}


def get_distribution(name: str) -> SceneDistribution:
    """The registered distribution called `name` (a ValueError lists the known names)."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {name!r}; known: {sorted(DISTRIBUTIONS)}")
    return DISTRIBUTIONS[name]


class MixtureDistribution:
    """Draw each scene from one of several named distributions, by weight
    (e.g. ``{"narrow": 0.7, "diverse": 0.3}``)."""

    def __init__(self, weights: dict[str, float]):
        for name in weights:
            get_distribution(name)
        if not weights or min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"mixture weights must be non-negative and not all zero, got {weights}")
        self.weights = dict(weights)

    def validate(self) -> "MixtureDistribution":
        return self

    def sample(self, rng: np.random.Generator, label: int) -> Scene:
        return get_distribution(_choice(rng, self.weights)).sample(rng, label)
