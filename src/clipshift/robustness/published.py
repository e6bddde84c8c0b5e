"""The published results shipped with the package: timm's ImageNet, ImageNet-V2, Sketch, R and A results and
open_clip's zero-shot results table, gzip-compressed under ``published_tables/`` and read by the same
readers as a user's copies (:func:`.tables.read_timm_folder`, :func:`.tables.read_openclip_table`).

- :func:`published_baseline`: the standard baseline line, timm's models trained on ImageNet-1k alone
  (the ``in1k-only`` selector, :func:`.tables.imagenet1k_only`); ``clipshift er --baseline published``.
- :func:`published_models`: reference models by name (``clipshift er --compare NAME``): ``published``
  (every shipped model), ``openclip`` (open_clip's zero-shot models), ``timm`` (every timm model; those
  already in the baseline stay baseline).

Every row carries ``source`` (which table, copied when), ``training_data`` (what the pretrained tag says
the model saw, e.g. ``LAION-2B``, ``ImageNet-22k → ImageNet-1k``; empty where the tag does not say) and
``pretrained`` (the tag). ``manifest.json`` beside the files records each table's upstream, version,
licence, checksums and row counts (``scripts/refresh_published.py`` rewrites it with the copies).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

from .tables import EXTRA_DATA_ARCH_TOKENS, EXTRA_DATA_TOKENS, imagenet1k_only, read_openclip_table, read_timm_folder

PUBLISHED = "published"  # --baseline published; --compare published
DATA_FOLDER = "published_tables"
MANIFEST = "manifest.json"
TIMM_FOLDER, OPENCLIP_FILE = "timm_results", "openclip_results.csv.gz"
COMPARE_NAMES = {"published": "every shipped model: open_clip's and timm's",
                 "openclip": "open_clip's zero-shot models",
                 "timm": "timm's models (those in the baseline stay baseline)"}

# timm pretrained-tag tokens that name training data, in the order the tag gives them (pre-training first)
TIMM_DATA = {"in1k": "ImageNet-1k", "in12k": "ImageNet-12k", "in21k": "ImageNet-21k", "in22k": "ImageNet-22k",
             "laion2b": "LAION-2B", "laiona": "LAION-Aesthetic", "laion400m": "LAION-400M", "openai": "OpenAI WIT-400M",
             "webli": "WebLI", "jft": "JFT-300M", "ig1b": "Instagram-1B", "yfcc100m": "YFCC-100M",
             "m38m": "Merged-38M", "m30m": "Merged-30M", "dfn2b": "DFN-2B", "lvd142m": "LVD-142M",
             "swag": "Instagram-3.6B (SWAG)", "seer": "Instagram-1B (SEER)"}
# open_clip pretrained tags, by prefix (the first that matches)
OPENCLIP_DATA = (("mscoco_finetuned_laion2b", "LAION-2B → MSCOCO"), ("openai", "OpenAI WIT-400M"),
                 ("laion400m", "LAION-400M"), ("laion2b", "LAION-2B"), ("laion5b", "LAION-5B"),
                 ("frozen_laion5b", "LAION-5B"), ("laion_aesthetic", "LAION-Aesthetic"),
                 ("datacomp1b", "DataComp-1B"), ("datacomp_xl_", "DataComp-1B"), ("datacomp_l_", "DataComp-L"),
                 ("datacomp_m_", "DataComp-M"), ("datacomp_s_", "DataComp-S"), ("datacomp", "DataComp"),
                 ("yfcc15m", "YFCC-15M"),
                 ("cc12m", "CC12M"), ("metaclip_400m", "MetaCLIP-400M"), ("metaclip_fullcc", "MetaCLIP-2.5B"),
                 ("dfn2b", "DFN-2B"), ("dfn5b", "DFN-5B"), ("webli", "WebLI"), ("merged2b", "Merged-2B"))
_POOL = re.compile(r"commonpool_(xl|l|m|s)(?:_(basic|clip|image|laion|text))?_s")


def data_dir() -> Path:
    """The folder of the shipped tables inside the installed package."""
    root = resources.files(__package__).joinpath(DATA_FOLDER)
    path = Path(str(root))
    if not path.is_dir():
        raise FileNotFoundError(f"the published tables are not installed: {path} is missing (reinstall clipshift)")
    return path


@lru_cache(maxsize=1)
def manifest() -> dict:
    """``manifest.json``: per table its upstream, version, licence, copy date, checksums and row counts."""
    return json.loads((data_dir() / MANIFEST).read_text(encoding="utf-8"))


def source_label(table: str) -> str:
    """The ``source`` of a shipped table's rows, e.g. ``timm results (pytorch-image-models results/, ...)``."""
    entry = manifest()["tables"][table]
    return f"{entry['title']} ({entry['upstream_path']}, {entry['version']})"


def timm_training_data(model_id: str) -> str | None:
    """What a timm model id's pretrained tag says it was trained on, stages joined by `` → ``
    (``convnext_base.fb_in22k_ft_in1k`` → ``ImageNet-22k → ImageNet-1k``); None without a tag. A tag
    token of :data:`.tables.EXTRA_DATA_TOKENS` without a known dataset (``ssld``, ``clip``) is kept as
    written when the tag names no other data than ImageNet-1k."""
    name = str(model_id).split("@", 1)[0]
    if "." not in name:
        return None
    arch, tag = name.lower().split(".", 1)
    tokens = [t for t in re.split(r"[_\-]", tag) if t and not t.isdigit()]
    tokens = [t for t in re.split(r"[_\-]", arch) if t in EXTRA_DATA_ARCH_TOKENS] + tokens  # hrnet_w18_ssld
    named = [TIMM_DATA[t] for t in tokens if t in TIMM_DATA]
    if set(named) <= {"ImageNet-1k"}:
        named = [TIMM_DATA.get(t, t) for t in tokens if t in TIMM_DATA or t in EXTRA_DATA_TOKENS]
    stages = [s for i, s in enumerate(named) if i == 0 or named[i - 1] != s]
    return " → ".join(stages) or None


def openclip_training_data(pretrained: str) -> str | None:
    """What an open_clip pretrained tag says the model was trained on (``laion2b_s34b_b79k`` → ``LAION-2B``,
    ``commonpool_m_clip_s128m_b4k`` → ``CommonPool-M (clip filter)``); None when the tag does not say."""
    tag = str(pretrained).strip().lower()
    pool = _POOL.match(tag)
    if pool:
        return f"CommonPool-{pool.group(1).upper()}" + (f" ({pool.group(2)} filter)" if pool.group(2) else "")
    return next((name for prefix, name in OPENCLIP_DATA if tag.startswith(prefix)), None)


@lru_cache(maxsize=1)
def _timm() -> pd.DataFrame:
    frame = read_timm_folder(data_dir() / TIMM_FOLDER)
    frame["pretrained"] = frame["name"].map(lambda n: n.split(".", 1)[1] if "." in n else None)
    frame["training_data"] = frame["model"].map(timm_training_data)
    frame["source"] = source_label("timm")
    return frame


@lru_cache(maxsize=1)
def _openclip() -> pd.DataFrame:
    frame = read_openclip_table(data_dir() / OPENCLIP_FILE)
    frame["training_data"] = frame["pretrained"].map(openclip_training_data)
    frame["source"] = source_label("open_clip")
    return frame


def published_timm() -> pd.DataFrame:
    """Every shipped timm row (long form, ``group`` ``timm``), with ``pretrained`` and ``training_data``."""
    return _timm().copy()


def published_openclip() -> pd.DataFrame:
    """Every shipped open_clip row (long form, ``group`` ``open_clip``), with ``training_data``."""
    return _openclip().copy()


def published_baseline() -> pd.DataFrame:
    """The standard baseline: the shipped timm rows of models trained on ImageNet-1k alone (in1k-only)."""
    frame = _timm()
    return frame[frame["model"].map(imagenet1k_only)].reset_index(drop=True)


def published_models(name: str) -> pd.DataFrame:
    """Reference models by name: ``published`` (all), ``openclip``, ``timm``; ValueError listing the
    known names for any other."""
    key = str(name).strip().lower().replace("_", "")
    if key not in COMPARE_NAMES:
        raise ValueError(f"--compare: unknown table {name!r}; expected one of {', '.join(COMPARE_NAMES)} "
                         f"(the shipped published tables) or a results file")
    parts = {"openclip": [_openclip()], "timm": [_timm()], "published": [_openclip(), _timm()]}[key]
    return pd.concat(parts, ignore_index=True)
