"""Configuration of the quickstart recipe: presets, YAML loading, validation."""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from ..parallel import resolve_jobs
from ..train.loop import TrainConfig
from ..world.distributions import get_distribution


# --- types of settings read from YAML ---------------------------------------------------------------------------

def _type_name(annotation) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return "a mapping" if is_dataclass(annotation) else annotation.__name__
    return str(annotation).replace("typing.", "")


def _conforms(value, annotation) -> bool:
    """Whether a YAML `value` fits a dataclass field's `annotation` (int, float, str, bool, lists,
    tuples, mappings, unions with None, nested dataclasses given as mappings); anything else passes."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        return any(_conforms(value, a) for a in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and is_dataclass(annotation):
        return isinstance(value, (dict, annotation))
    if annotation is list or origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is tuple:
        return (isinstance(value, (list, tuple)) and len(value) == len(args)
                and all(_conforms(v, a) for v, a in zip(value, args)))
    if annotation is dict or origin is dict:
        return isinstance(value, dict) and (not args or all(_conforms(k, args[0]) and _conforms(v, args[1])
                                                            for k, v in value.items()))
    return True


def check_types(values: dict, cls, where: str) -> None:
    """ValueError naming the first setting in `values` whose value does not fit its field of the
    dataclass `cls` (e.g. ``config.train_size: expected int, got 'many' (str)``)."""
    hints = get_type_hints(cls)
    for name, value in values.items():
        if name in hints and not _conforms(value, hints[name]):
            hint = ""
            if isinstance(value, str) and _conforms(1.5, hints[name]) and re.fullmatch(r"[-+]?\d+[eE][-+]?\d+", value):
                hint = f"; YAML reads {value} as text, write {value.lower().replace('e', '.0e', 1)}"
            raise ValueError(f"{where}.{name}: expected {_type_name(hints[name])}, got {value!r} "
                             f"({type(value).__name__}){hint}")


def unknown_keys(values: dict, cls) -> list[str]:
    """The keys of `values` that name no field of the dataclass `cls`, as text, sorted."""
    known = {f.name for f in fields(cls)}
    return sorted(str(k) for k in values if k not in known)


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
    # two-ID-test-set fit (Shi et al. 2023), five of them so that the plane's `diverse` direction
    # rests on more than a few models (its bootstrap resamples within each training distribution).
    # New runs go last: a run's seed is its position, so the earlier models stay as they were.
    baselines: list[BaselineRun] = field(default_factory=lambda: [
        BaselineRun(300, 6), BaselineRun(600, 6), BaselineRun(1200, 6), BaselineRun(2500, 6),
        BaselineRun(5000, 6), BaselineRun(8000, 2), BaselineRun(2500, 4, augment=False),
        BaselineRun(8000, 4), BaselineRun(2500, 6, architecture="clipshift-tiny-bow"),
        BaselineRun(600, 6, distribution="diverse"), BaselineRun(1500, 6, distribution="diverse"),
        BaselineRun(4000, 6, distribution="diverse"), BaselineRun(1000, 6, distribution="diverse"),
        BaselineRun(2500, 6, distribution="diverse"),
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
        unknown = unknown_keys(overrides, type(base))
        if unknown:
            raise ValueError(f"distributions.{name}: unknown keys {unknown}; known: "
                             f"{sorted(f.name for f in fields(base))}")
        check_types(overrides, type(base), f"distributions.{name}")
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
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {values!r} ({type(values).__name__})")
    unknown = unknown_keys(values, cls)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(f.name for f in fields(cls))}")
    check_types(values, cls, where)
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
    try:
        loaded = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file (byte {error.start} is not UTF-8); expected YAML settings") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if loaded is None:
        return {}
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
