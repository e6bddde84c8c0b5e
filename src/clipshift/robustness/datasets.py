"""Dataset names: the canonical ids of ImageNet and its natural shifts, and the one alias table every
results-table reader goes through.

Canonical ids: ``imagenet``, ``imagenet-v2``, ``imagenet-sketch``, ``imagenet-r``, ``imagenet-a``,
``objectnet``. A name is matched to an alias after lower-casing and dropping everything but letters,
digits and dots (so case, ``_``, ``-`` and spaces do not matter: ``ImageNet_Sketch``, ``imagenet-sketch``
and ``ImageNet Sketch`` are one name), a leading ``wds/`` (CLIP_benchmark's webdataset names) and a
trailing ``:top1`` (WiSE-FT's result keys) removed. :data:`DATASET_ALIASES` is the table; names
that match no alias are not ImageNet-family datasets and stay as written (the embedded world's
``test``, ``v2``, ``sketch``, ...: a bare ``sketch`` is the world's, not ImageNet-Sketch).
"""

from __future__ import annotations

import re

CANONICAL_DATASETS = ("imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet")
NATURAL_SHIFTS = CANONICAL_DATASETS[1:]

# Size of each canonical evaluation set, used as the binomial n of a published accuracy (the tables do
# not say it). ObjectNet: the images in the 113 folders that map to ImageNet classes.
DATASET_SIZES = {"imagenet": 50_000, "imagenet-v2": 10_000, "imagenet-sketch": 50_889, "imagenet-r": 30_000,
                 "imagenet-a": 7_500, "objectnet": 18_574}

# canonical id -> the names it is written as (compared after normalisation, see the module docstring):
# open_clip's columns, CLIP_benchmark's dataset names, model-soups' / WiSE-FT's keys, timm's file stems.
DATASET_ALIASES: dict[str, tuple[str, ...]] = {
    "imagenet": ("imagenet", "imagenet1k", "imagenet 1k", "imagenet-val", "ilsvrc2012", "ilsvrc-2012", "in1k",
                 "imagenet-1k-val"),
    "imagenet-v2": ("imagenet-v2", "imagenetv2", "imagenetv2-matched-frequency", "imagenet-v2-matched-frequency",
                    "imagenetv2-matched-frequency-format-val", "in-v2"),
    "imagenet-sketch": ("imagenet-sketch", "imagenet_sketch", "in-sketch"),
    "imagenet-r": ("imagenet-r", "imagenet-rendition", "in-r"),
    "imagenet-a": ("imagenet-a", "imagenet-adversarial", "in-a"),
    "objectnet": ("objectnet", "objectnet-1.0", "object net"),
}


def _key(name: str) -> str:
    text = str(name).strip().lower()
    text = re.sub(r"^wds/", "", text)
    text = re.sub(r":top-?1$", "", text)
    return re.sub(r"[^a-z0-9.]", "", text)


_ALIAS_TO_ID = {_key(alias): canonical for canonical, aliases in DATASET_ALIASES.items() for alias in aliases}


def canonical_dataset(name: str) -> str:
    """The canonical id of a dataset name ('ImageNet v2' → 'imagenet-v2'); unknown names unchanged."""
    return _ALIAS_TO_ID.get(_key(name), str(name).strip())


def is_imagenet_family(name: str) -> bool:
    """Whether `name` is ImageNet or one of its natural shifts under some alias."""
    return _key(name) in _ALIAS_TO_ID
