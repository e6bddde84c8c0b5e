"""Configuration of the quickstart recipe: presets, YAML loading, validation."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..parallel import resolve_jobs
from ..train.loop import TrainConfig
from ..world.distributions import get_distribution


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


@dataclass
class QuickstartConfig:
    seed: int = 0
    architecture: str = "clipshift-small-bow"
    image_size: int = 32
    train_size: int = 8000
    eval_size: int = 1200
    adversarial_size: int = 600
    workers: int = 2  # processes generating the world
    jobs: int = 0  # models trained at once, one process each (0: one per CPU; 1: in this process)
    supervised: TrainConfig = field(default_factory=lambda: TrainConfig("supervised", epochs=6, batch_size=128, lr=2e-3))
    contrastive: TrainConfig = field(default_factory=lambda: TrainConfig("contrastive", epochs=10, batch_size=64, lr=2e-3))
    # The baseline: supervised models on `narrow` of many sizes, epochs, augmentation and image
    # towers (as imagenet-testbed's many ImageNet models), plus `diverse`-trained ones for the
    # two-ID-test-set fit (Shi et al. 2023).
    baselines: list[BaselineRun] = field(default_factory=lambda: [
        BaselineRun(300, 6), BaselineRun(600, 6), BaselineRun(1200, 6), BaselineRun(2500, 6),
        BaselineRun(5000, 6), BaselineRun(8000, 2), BaselineRun(2500, 4, augment=False),
        BaselineRun(8000, 4), BaselineRun(2500, 6, architecture="clipshift-tiny-bow"),
        BaselineRun(600, 6, distribution="diverse"), BaselineRun(1500, 6, distribution="diverse"),
        BaselineRun(4000, 6, distribution="diverse"),
    ])
    reference: BaselineRun = field(default_factory=lambda: BaselineRun(4000, 4))
    diverse_label_source: str = "text_match"  # labels of the supervised diverse model: text_match | true
    # Per-distribution overrides of the world's registry, e.g.
    # {"diverse": {"styles": {"photo": 0.7, "sketch": 0.3}, "factor_rate": 0.1}}
    distributions: dict[str, dict] = field(default_factory=dict)

    def validate(self) -> "QuickstartConfig":
        for name in ("train_size", "eval_size", "adversarial_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        resolve_jobs(self.jobs)
        narrow = [run for run in self.baselines if run.distribution == "narrow"]
        if len(narrow) < 2:
            raise ValueError(f"baselines needs at least 2 runs on narrow data to fit a line, got {len(narrow)}")
        for i, run in enumerate([*self.baselines, self.reference]):
            where = f"baselines[{i}]" if i < len(self.baselines) else "reference"
            if run.distribution not in ("narrow", "diverse"):
                raise ValueError(f"{where}.distribution must be 'narrow' or 'diverse', got {run.distribution!r}")
            if run.train_size < 1 or run.epochs < 1:
                raise ValueError(f"{where}: train_size and epochs must be at least 1, got {run.train_size}, {run.epochs}")
        names = [run.name() for run in self.baselines]
        if len(set(names)) < len(names):
            raise ValueError(f"baselines: two runs with the same settings: {sorted({n for n in names if names.count(n) > 1})}")
        if self.diverse_label_source not in ("text_match", "true"):
            raise ValueError(f"diverse_label_source must be 'text_match' or 'true', got {self.diverse_label_source!r}")
        for name in self.distributions:
            self.distribution(name)
        self.supervised.validate()
        self.contrastive.validate()
        return self

    def distribution(self, name: str):
        """The world's distribution `name` with this config's overrides applied and validated."""
        base = get_distribution(name)
        overrides = self.distributions.get(name, {})
        known = {f.name for f in fields(base)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"distributions.{name}: unknown keys {unknown}; known: {sorted(known)}")
        return replace(base, **overrides).validate()


TINY = dict(
    train_size=2400, eval_size=300, adversarial_size=120, workers=2,  # the default image tower: CLIP learns
    supervised=dict(epochs=6, batch_size=64), contrastive=dict(epochs=8, batch_size=64),
    baselines=[dict(train_size=200, epochs=4), dict(train_size=600, epochs=6),
               dict(train_size=1200, epochs=6), dict(train_size=2400, epochs=6),
               dict(train_size=600, epochs=6, distribution="diverse"),
               dict(train_size=2400, epochs=4, distribution="diverse")],
    reference=dict(train_size=1200, epochs=4),
)
PRESETS: dict[str, dict] = {"default": {}, "tiny": TINY}


def _build(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    kwargs = {}
    base = cls() if cls is not BaselineRun else None
    for name, value in values.items():
        default = getattr(base, name) if base is not None else None
        if is_dataclass(default) and isinstance(value, dict):
            merged = {**asdict(default), **value}
            value = _build(type(default), merged, f"{where}.{name}")
        elif name in ("baselines",):
            value = [_build(BaselineRun, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif name == "reference":
            value = _build(BaselineRun, value, f"{where}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """The mapping of settings in the YAML file `path` (an empty file is an empty mapping);
    `what` names the file in the error when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of settings, got {type(loaded).__name__}")
    return loaded


def set_dotted(values: dict, key: str, value) -> None:
    """Set ``values[a][b] = value`` for the dotted `key` ``a.b`` (sections created as needed)."""
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
    node[parts[-1]] = value


def merge_settings(base: dict, update: dict) -> dict:
    """`base` updated by `update`, nested mappings merged key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = merge_settings(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else copy.deepcopy(value)
    return out


def read_settings(path=None, overrides: dict | None = None, what: str = "config file", base: dict | None = None) -> dict:
    """The one reader of settings for every command: `base` (a preset), updated by the YAML file at
    `path` (none: nothing), updated by dotted `overrides` (``train.epochs=3`` sets
    ``{"train": {"epochs": 3}}``); nested mappings are merged key by key."""
    values = merge_settings(base or {}, read_yaml_mapping(path, what) if path is not None else {})
    for key, value in (overrides or {}).items():
        nested: dict = {}
        set_dotted(nested, key, value)
        values = merge_settings(values, nested)
    return values


def load_config(preset: str = "default", path: str | Path | None = None, overrides: dict | None = None, *,
                cls=QuickstartConfig, presets: dict[str, dict] = PRESETS):
    """A preset, updated by a YAML file, updated by `overrides`; validated. `cls` and `presets`
    select another recipe's configuration class (a subclass of :class:`QuickstartConfig`)."""
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(presets)}")
    return _build(cls, read_settings(path, overrides, base=presets[preset]), "config").validate()


def config_to_yaml(config: QuickstartConfig) -> str:
    return yaml.safe_dump(asdict(config), sort_keys=False)
