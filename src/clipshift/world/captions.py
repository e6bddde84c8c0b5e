"""Flickr-style captions (title, description, tags) written from a scene's own attributes.

As in ImageNet-Captions and YFCC, the class is named, by its name or a synonym, most of the
time (``p_mention``, about 90%) and is sometimes absent; captions carry distractor words and
occasionally another class's word (``p_other_class``); colour, style and background are
mentioned sometimes. :data:`ZERO_SHOT_TEMPLATES` are prompts in the same register.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .render import Scene
from .shapes import SHAPES

STYLE_WORDS = {
    "photo": ("photo", "photograph", "snapshot"),
    "sketch": ("sketch", "drawing", "pencil drawing", "doodle"),
    "cartoon": ("cartoon", "clipart", "illustration"),
    "pattern": ("pattern", "patterned print", "fabric print"),
    "painting": ("painting", "watercolor", "oil painting"),
    "mosaic": ("mosaic", "pixel art"),
}
BACKGROUND_WORDS = {
    "grass": "on the grass", "sky": "against the sky", "sand": "on the beach",
    "forest": "in the woods", "water": "by the lake", "snow": "in the snow",
    "paper": "on paper", "flat": "plain background", "painted": "on canvas",
    "tiles": "on the tiles", "carpet": "on the carpet", "stripes": "by the wall",
    "dark": "at night", "neon": "under neon light",
}
FILLER_TAGS = (
    "nikon", "canon", "2007", "2009", "summer", "vacation", "explore", "flickr", "art", "macro",
    "bokeh", "family", "trip", "weekend", "sunday", "favorite", "cool", "new", "old", "project",
    "hdr", "street", "color", "fun", "friends", "travel", "light", "detail",
)
FILLER_TITLES = ("IMG_{n}", "DSC{n}", "untitled", "sunday afternoon", "look at this", "day {n}")
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a {}",
    "a photo of a {}.",
    "my {}",
    "a {} on the grass",
    "a drawing of a {}",
    "a sketch of a {}",
    "a painting of a {}",
    "a cartoon {}",
    "a {} pattern",
    "a picture of the {}",
    "{} art",
)
BARE_TEMPLATE: tuple[str, ...] = ("{}",)


@dataclass(frozen=True)
class CaptionConfig:
    p_mention: float = 0.9  # the class is named somewhere in the caption
    p_synonym: float = 0.35  # a mention uses a synonym rather than the class name
    p_other_class: float = 0.06  # another class's word appears
    p_colour: float = 0.5
    p_style: float = 0.5
    p_background: float = 0.3
    p_description: float = 0.6
    max_filler_tags: int = 4

    def validate(self) -> "CaptionConfig":
        for name, value in vars(self).items():
            if name.startswith("p_") and not 0.0 <= value <= 1.0:
                raise ValueError(f"caption {name} must be in [0, 1], got {value}")
        return self


def _word(rng: np.random.Generator, label: int, p_synonym: float) -> str:
    shape = SHAPES[label]
    if shape.synonyms and rng.random() < p_synonym:
        return shape.synonyms[rng.integers(len(shape.synonyms))]
    return shape.name


def write_caption(scene: Scene, rng: np.random.Generator, cfg: CaptionConfig = CaptionConfig()) -> str:
    """One caption for `scene`: ``title. description tags``, lower-case words like Flickr's."""
    pick = lambda seq: seq[rng.integers(len(seq))]  # noqa: E731
    mention = rng.random() < cfg.p_mention
    where = set()
    if mention:
        where = {slot for slot in ("title", "description", "tags") if rng.random() < 0.5}
        where = where or {pick(("title", "description", "tags"))}
    colour = scene.colour if rng.random() < cfg.p_colour else ""
    style = pick(STYLE_WORDS[scene.style]) if rng.random() < cfg.p_style else ""
    place = BACKGROUND_WORDS[scene.background] if rng.random() < cfg.p_background else ""

    if "title" in where:
        title = " ".join(w for w in ("my" if rng.random() < 0.3 else "", colour, _word(rng, scene.label, cfg.p_synonym)) if w)
    else:
        title = pick(FILLER_TITLES).format(n=rng.integers(10, 9999))
    parts = [title + "."]
    if "description" in where or rng.random() < cfg.p_description:
        noun = _word(rng, scene.label, cfg.p_synonym) if "description" in where else "thing"
        lead = pick(("a", "this", "found this", "my friend's", "another"))
        desc = " ".join(w for w in (lead, colour, noun, style and f"({style})", place) if w)
        parts.append(desc + ".")
    tags = list(rng.choice(FILLER_TAGS, size=rng.integers(0, cfg.max_filler_tags + 1), replace=False))
    if "tags" in where:
        tags.append(_word(rng, scene.label, cfg.p_synonym))
    if style and rng.random() < 0.5:
        tags.append(style.split()[-1])
    if rng.random() < cfg.p_other_class:
        other = int(rng.integers(len(SHAPES) - 1))
        other += other >= scene.label
        tags.append(_word(rng, other, cfg.p_synonym))
    rng.shuffle(tags)
    if tags:
        parts.append(" ".join(str(t) for t in tags))
    return " ".join(parts)
