"""The world's object classes: names, synonyms and geometry.

Every class is a union of filled polygons minus other polygons, given in a canonical,
upright pose on the unit disc (x right, y up). Rendering (``render.py``) scales, rotates and
places them; nothing here depends on image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Polygon = np.ndarray  # (V, 2) float vertices, x right / y up, roughly within the unit disc


@dataclass(frozen=True)
class ShapeClass:
    """One object class: its caption words and its geometry."""

    name: str
    synonyms: tuple[str, ...]
    add: tuple[Polygon, ...]  # filled parts
    cut: tuple[Polygon, ...] = ()  # parts removed from the union of `add`


def _regular(n: int, radius: float = 1.0, phase_deg: float = 90.0, centre=(0.0, 0.0)) -> Polygon:
    angles = np.deg2rad(phase_deg) + 2 * np.pi * np.arange(n) / n
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], 1)


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.42) -> Polygon:
    radii = np.tile([outer, inner], points)
    angles = np.deg2rad(90.0) + np.pi * np.arange(2 * points) / points
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _heart() -> Polygon:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y + 2.5], 1) / 16.5


def _drop() -> Polygon:
    # Tip at (0, 1); circle of radius 0.62 centred at (0, -0.32). The tangents from the tip
    # touch the circle 62 degrees either side of straight up.
    centre, radius = np.array([0.0, -0.32]), 0.62
    half = np.arccos(radius / (1.0 + 0.32))
    arc = np.linspace(np.pi / 2 - half, np.pi / 2 + half - 2 * np.pi, 36)
    points = centre + radius * np.stack([np.cos(arc), np.sin(arc)], 1)
    return np.vstack([[0.0, 1.0], points])


def _box(x0, y0, x1, y1) -> Polygon:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


SHAPES: tuple[ShapeClass, ...] = (
    ShapeClass("circle", ("disc", "disk", "ball"), (_regular(40),)),
    ShapeClass("square", ("box", "block"), (_box(-0.78, -0.78, 0.78, 0.78),)),
    ShapeClass("triangle", ("pyramid", "wedge"), (_regular(3, 1.0, 90.0, (0.0, -0.12)),)),
    ShapeClass("star", ("pentagram",), (_star(),)),
    ShapeClass("cross", ("plus",), (_box(-1, -0.3, 1, 0.3), _box(-0.3, -1, 0.3, 1))),
    ShapeClass("heart", ("valentine",), (_heart(),)),
    ShapeClass(
        "arrow",
        ("pointer",),
        (_box(-1.0, -0.22, 0.15, 0.22), np.array([[0.1, -0.65], [1.0, 0.0], [0.1, 0.65]])),
    ),
    ShapeClass("crescent", ("moon",), (_regular(40),), (_regular(40, 0.86, 90.0, (0.42, 0.12)),)),
    ShapeClass("hexagon", ("hex", "honeycomb"), (_regular(6, 1.0, 0.0),)),
    ShapeClass(
        "house",
        ("home", "cabin"),
        (_box(-0.68, -0.92, 0.68, 0.12), np.array([[-0.95, 0.1], [0.0, 0.98], [0.95, 0.1]])),
    ),
    ShapeClass("drop", ("droplet", "raindrop", "teardrop"), (_drop(),)),
    ShapeClass(
        "bolt",
        ("lightning", "thunderbolt"),
        (
            np.array(
                [[-0.15, 1.0], [0.55, 1.0], [0.12, 0.22], [0.6, 0.22], [-0.4, -1.0],
                 [-0.05, -0.12], [-0.52, -0.12]]
            ),
        ),
    ),
)

CLASS_NAMES: tuple[str, ...] = tuple(shape.name for shape in SHAPES)
SYNONYMS: dict[str, list[str]] = {shape.name: list(shape.synonyms) for shape in SHAPES}
