"""The embedded world as the quickstart and the study use it: the settings they share, composed
into each recipe's settings (:class:`WorldSpec`, :class:`BaselineRun`), its generation and export
(:func:`build_world`), its training sets read back (:func:`load_training_set`) and the reference
classifier's predictions that choose the adversarial set (:func:`predictor`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from ...data import TextMatcher, load_images, match_report, read_caption_table
from ...data.csv_source import label_index
from ...data.eval_sets import open_eval_set, suite_tensors
from ...evaluate import ImageTensors, build_head, encode
from ...models.interface import EvalModel
from ...world.distributions import get_distribution
from ...world.export import export_caption_csv, export_imagefolder
from ...world.generate import generate_split
from ...world.shapes import CLASS_NAMES, SYNONYMS
from .settings import check_types, unknown_keys

__all__ = ["BaselineRun", "EVAL_DISTRIBUTIONS", "WorldSpec", "as_tensor", "build_world", "check_baselines",
           "load_eval_set", "load_training_set", "predictor"]

# the world's evaluation sets (but `adversarial`, chosen by a classifier) and the distribution each is drawn from
EVAL_DISTRIBUTIONS = {"test": "narrow", "test_diverse": "diverse", "v2": "v2", "sketch": "sketch",
                      "rendition": "rendition", "objectnet": "objectnet"}


@dataclass
class BaselineRun:
    """One baseline model: supervised on `distribution` (``narrow``: true labels; ``diverse``: the
    config's ``diverse_label_source``), `train_size` images, `epochs` epochs, with or without the
    training augmentation, on the config's architecture unless `architecture` names another."""

    train_size: int
    epochs: int
    augment: bool = True
    architecture: str | None = None
    distribution: str = "narrow"

    def name(self) -> str:
        """``baseline[_diverse]_n<size>_e<epochs>[_noaug][_<architecture>]``: unique per settings."""
        parts = ["baseline" if self.distribution == "narrow" else f"baseline_{self.distribution}",
                 f"n{self.train_size}", f"e{self.epochs}"]
        parts += [] if self.augment else ["noaug"]
        parts += [self.architecture] if self.architecture else []
        return "_".join(parts)


def check_baselines(baselines: list[BaselineRun], reference: BaselineRun) -> None:
    """ValueError unless the baseline can fit a line (two runs on narrow data), every run's settings
    are in range and no two runs share their settings."""
    narrow = [run for run in baselines if run.distribution == "narrow"]
    if len(narrow) < 2:
        raise ValueError(f"baselines needs at least 2 runs on narrow data to fit a line, got {len(narrow)}")
    for i, run in enumerate([*baselines, reference]):
        where = f"baselines[{i}]" if i < len(baselines) else "reference"
        if run.distribution not in ("narrow", "diverse"):
            raise ValueError(f"{where}.distribution must be 'narrow' or 'diverse', got {run.distribution!r}")
        if run.train_size < 1 or run.epochs < 1:
            raise ValueError(f"{where}: train_size and epochs must be at least 1, got {run.train_size}, {run.epochs}")
    names = [run.name() for run in baselines]
    if len(set(names)) < len(names):
        raise ValueError(f"baselines: two runs with the same settings: {sorted({n for n in names if names.count(n) > 1})}")


@dataclass(frozen=True)
class WorldSpec:
    """The world a recipe generates: its seed, image size, images per training distribution and per
    evaluation set, the adversarial set's size, the generating processes, and per-distribution
    overrides of the world's registry (``{"diverse": {"styles": {...}, "factor_rate": 0.1}}``)."""

    seed: int
    image_size: int
    train_size: int
    eval_size: int
    adversarial_size: int
    workers: int
    distributions: dict = field(default_factory=dict)

    @classmethod
    def of(cls, config) -> "WorldSpec":
        """The world of a recipe's settings (any object with these fields)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def validate(self) -> "WorldSpec":
        for name in ("train_size", "eval_size", "adversarial_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in self.distributions:
            self.distribution(name)
        return self

    def distribution(self, name: str):
        """The world's distribution `name` with the overrides applied and validated."""
        base = get_distribution(name)
        overrides = self.distributions.get(name, {})
        unknown = unknown_keys(overrides, type(base))
        if unknown:
            raise ValueError(f"distributions.{name}: unknown keys {unknown}; known: "
                             f"{sorted(f.name for f in fields(base))}")
        check_types(overrides, type(base), f"distributions.{name}")
        return replace(base, **overrides).validate()


def as_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 array → (N, 3, H, W) tensor."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def build_world(world: WorldSpec, world_dir: Path, progress: bool, sizes: dict | None = None) -> dict:
    """Generate and export the training CSVs (``train_size`` images each, unless `sizes` maps a
    distribution to another count) and the evaluation ImageFolder trees (but `adversarial`)."""
    kw = dict(seed=world.seed, size=world.image_size, workers=world.workers, progress=progress)
    counts = {name: (sizes or {}).get(name, world.train_size) for name in ("narrow", "diverse")}
    for name, count in counts.items():
        export_caption_csv(generate_split(world.distribution(name), count, split=f"train_{name}", **kw), world_dir)
    for name, dist in EVAL_DISTRIBUTIONS.items():
        export_imagefolder(generate_split(world.distribution(dist), world.eval_size, split=name, **kw), world_dir)
    return {"images_generated": sum(counts.values()) + len(EVAL_DISTRIBUTIONS) * world.eval_size}


def load_training_set(world_dir: Path, name: str, progress: bool, class_names=CLASS_NAMES,
                      synonyms: dict | None = SYNONYMS) -> dict:
    """Read ``train_<name>.csv`` back through the generic loader; text-match its captions.
    The ``label`` column, when the table has one, gives the true labels (else -1 everywhere)."""
    table = read_caption_table(world_dir / f"train_{name}.csv")
    images = load_images(table["filepath"].tolist(), progress=progress)
    matched = TextMatcher(list(class_names), synonyms).match_many(table["caption"].tolist())
    if "label" in table:
        true = np.asarray([label_index(v, list(class_names), i) for i, v in enumerate(table["label"])])
        report = match_report(matched, true)
    else:
        true, report = np.full(len(table), -1), {"match_rate": float((matched >= 0).mean())}
    return {"images": images, "captions": table["caption"].tolist(), "true": true, "matched": matched,
            "match": report}


def load_eval_set(root: Path, name: str, progress: bool, classes="world") -> ImageTensors:
    """The evaluation set `name` under `root` (:func:`~clipshift.data.eval_sets.open_eval_set`'s rule)
    decoded into memory, labelled over `classes` (``world``, a file, a list of class names); each image's
    id is its path under the set's folder."""
    return ImageTensors(*suite_tensors(open_eval_set(name, root, classes=classes), progress=progress, with_ids=True))


def predictor(model: EvalModel):
    """images (N, H, W, 3) uint8 array → the classifier's predicted classes, for the adversarial filter."""
    head = build_head("linear", model)

    def predict(images: np.ndarray) -> np.ndarray:
        data = ImageTensors(as_tensor(images), torch.zeros(len(images), dtype=torch.long))
        return head(encode(model, data, progress=False).features).argmax(1).numpy()

    return predict
