"""The one settings loader of every recipe: YAML file + dotted overrides → a recipe's dataclass.

:func:`load_settings` reads a preset, a YAML file and ``key=value`` overrides (:func:`read_settings`)
and builds the dataclass (:func:`build_settings`): every key must name a field, every value must
fit the field's type (:func:`check_types`), nested dataclasses are given as mappings (merged key by
key into the field's default) and lists of dataclasses as lists of mappings. Errors name the
setting with its path (``config.baselines[0].train_size: expected int, got 'big' (str)``).

The loader builds and never validates: each recipe's ``validate()`` checks its settings and never
rewrites them; what a recipe derives from its settings it derives in its own ``resolved()``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import MISSING, asdict, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = ["build_settings", "check_types", "load_settings", "merge_settings", "read_settings", "read_yaml_mapping",
           "set_dotted", "settings_yaml", "unknown_keys"]


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


def _dataclass_of(annotation):
    """The dataclass an annotation names (``X`` or ``X | None``), else None."""
    if isinstance(annotation, type) and is_dataclass(annotation):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        found = [a for a in get_args(annotation) if isinstance(a, type) and is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _default(cls, name: str):
    """The default value of field `name` of `cls` (MISSING when it has none)."""
    for f in fields(cls):
        if f.name == name:
            return f.default_factory() if f.default_factory is not MISSING else f.default
    return MISSING


def build_settings(cls, values: dict[str, Any], where: str = "config"):
    """The dataclass `cls` from a mapping of settings: unknown keys and values of the wrong type are
    errors naming the setting; a nested dataclass field given as a mapping is merged key by key into
    the field's default; a list of dataclasses is built item by item. Not validated."""
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {values!r} ({type(values).__name__})")
    unknown = unknown_keys(values, cls)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(f.name for f in fields(cls))}")
    check_types(values, cls, where)
    hints, kwargs = get_type_hints(cls), {}
    for name, value in values.items():
        nested, origin = _dataclass_of(hints[name]), get_origin(hints[name])
        if nested is not None and isinstance(value, dict):
            default = _default(cls, name)
            merged = {**asdict(default), **value} if is_dataclass(default) else value
            value = build_settings(nested, merged, f"{where}.{name}")
        elif origin is list and get_args(hints[name]) and _dataclass_of(get_args(hints[name])[0]) is not None:
            item = _dataclass_of(get_args(hints[name])[0])
            value = [build_settings(item, v, f"{where}.{name}[{i}]") if isinstance(v, dict) else v
                     for i, v in enumerate(value)]
        kwargs[name] = value
    missing = [f.name for f in fields(cls) if f.name not in kwargs and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
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
    """`base` (a preset), updated by the YAML file at `path` (none: nothing), updated by dotted
    `overrides` (``train.epochs=3`` sets ``{"train": {"epochs": 3}}``); nested mappings are merged
    key by key."""
    values = merge_settings(base or {}, read_yaml_mapping(path, what) if path is not None else {})
    for key, value in (overrides or {}).items():
        nested: dict = {}
        set_dotted(nested, key, value)
        values = merge_settings(values, nested)
    return values


def load_settings(cls, path=None, overrides: dict | None = None, *, base: dict | None = None,
                  what: str = "config file", where: str = "config"):
    """The one loader of every recipe: `base` ← the YAML file at `path` ← dotted `overrides`, built
    into the dataclass `cls` (:func:`build_settings`; not validated)."""
    return build_settings(cls, read_settings(path, overrides, what, base), where)


def settings_yaml(config) -> str:
    """A recipe's settings as the YAML it reads back."""
    return yaml.safe_dump(asdict(config), sort_keys=False)
