"""Readers for result tables as people have them beyond the four original formats:

- CLIP_benchmark's built CSV (``clip_benchmark build`` output, its published ``benchmark.csv``): long,
  one row per model × dataset, ``acc1, acc5, mean_per_class_recall, dataset, model, pretrained, task,
  ...``; model id ``model/pretrained``;
- JSON lines with one object per model (model-soups', WiSE-FT's result files): ``{"model_name": ...,
  "ImageNet": 0.80, "ImageNetV2": 0.69, ...}``;
- any long table whose columns are named by the caller (``model_columns``, ``dataset_column``,
  ``value_column``, ``where``), e.g. a scaling-law study's ``arch, name, downstream_dataset, acc1``.

Every reader returns the long form of :mod:`.tables` (``model, dataset, metric, value, num_examples,
source, group, <metadata>``), CLIP_benchmark's CSV and JSON lines with the ``protocol`` their sources
document (:mod:`.protocols`: CLIP_benchmark's; imagenet-testbed's conventions, as WiSE-FT and
model-soups evaluate, for JSON lines). Dataset names go through the alias table of :mod:`.datasets`; rows or
keys naming no ImageNet-family dataset (nor one of the caller's `datasets`) are left out, and a
one-line note naming them is put in ``frame.attrs["notes"]``. An error only when nothing is left.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import (TableFormatError, as_fraction, check_unique, left_out_note, lines_of, read_csv, read_text,
                  stem_of)
from .datasets import DATASET_SIZES, canonical_dataset, is_imagenet_family
from .protocols import stamp_published

CLIP_BENCHMARK_CSV_COLUMNS = ("dataset", "model", "pretrained", "acc1")
JSONL_MODEL_KEYS = ("model_name", "model", "name")  # the first present names the model
JSONL_META_KEYS = frozenset({"model_name", "model", "name", "pretrained", "alpha", "group", "params", "epoch",
                             "step", "seed"})
VALUE_COLUMNS = ("value", "top1", "acc1")  # the value column, when none is named: the first present


def _keep(names: pd.Series, datasets) -> pd.Series:
    """Which (raw) dataset names to keep: ImageNet-family ones and those named in `datasets`."""
    extra = {canonical_dataset(d) for d in (datasets or ())}
    return names.map(lambda n: is_imagenet_family(n) or canonical_dataset(n) in extra).astype(bool)


def _finish(frame: pd.DataFrame, group: str, source: str, notes: list) -> pd.DataFrame:
    frame["metric"] = "top1"
    frame["num_examples"] = frame["dataset"].map(DATASET_SIZES).astype(float)
    if "group" not in frame.columns:
        frame["group"] = group
    frame["source"] = source
    first = ["model", "dataset", "metric", "value", "num_examples"]
    frame = frame[first + [c for c in frame.columns if c not in first]].reset_index(drop=True)
    frame.attrs["notes"] = list(notes)
    return frame


def _from_columns(frame: pd.DataFrame, path: Path, model_columns: list, dataset_column: str, value_column: str,
                  datasets, group: str, notes: list) -> pd.DataFrame:
    """The long form of `frame` (strings, as read) with its columns named."""
    where, lines = str(path), lines_of(frame)
    frame = frame[frame[dataset_column].notna()]
    keep = _keep(frame[dataset_column], datasets)
    if (~keep).any():
        notes.append(left_out_note(where, frame.loc[~keep, dataset_column], int((~keep).sum()), "row(s)"))
    frame = frame[keep]
    if frame.empty:
        raise TableFormatError(f"{where}: no rows left on ImageNet or its natural shifts (column "
                               f"{dataset_column!r}); " + (notes[-1] if notes else "the table has no rows"))
    parts = [frame[c].fillna("").astype(str).str.strip() for c in model_columns]
    model = parts[0].str.cat(parts[1:], sep="/") if len(parts) > 1 else parts[0]
    out = pd.DataFrame({"model": model, "dataset": frame[dataset_column].map(canonical_dataset),
                        "value": as_fraction(frame[value_column], where, value_column, lines)}, index=frame.index)
    for column in model_columns if len(model_columns) > 1 else ():  # the parts of the id, as metadata
        out["name" if column == "model" else column] = frame[column]
    if "group" in frame.columns:
        out["group"] = frame["group"]
    empty = out["value"].isna()
    if empty.any():
        notes.append(f"{where}: left out {int(empty.sum())} row(s) with no {value_column!r} value (lines "
                     f"{', '.join(str(lines[i]) for i in out.index[empty][:5])}{' ...' if empty.sum() > 5 else ''})")
    out = out[~empty]
    check_unique(out, ["model", "dataset"], where, lines, f"result (model columns {model_columns})")
    return _finish(out, group, path.name, notes)


def _missing(frame: pd.DataFrame, needed, path: Path, what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise TableFormatError(f"{path}: {what}: no column(s) {missing}; columns: {list(frame.columns)}")


def apply_where(frame: pd.DataFrame, where: dict | None, path: Path) -> pd.DataFrame:
    """Rows whose column ``COL`` equals ``VALUE`` (compared as stripped text) for every pair of `where`."""
    for column, value in (where or {}).items():
        _missing(frame, [column], path, "--where")
        frame = frame[frame[column].fillna("").astype(str).str.strip() == str(value).strip()]
        if frame.empty:
            raise TableFormatError(f"{path}: no rows with {column} = {value!r}")
    return frame


def read_columns_table(path, model_columns=None, dataset_column: str | None = None, value_column: str | None = None,
                       where: dict | None = None, datasets=None) -> pd.DataFrame:
    """A long table (CSV, TSV for ``.tsv``) with its columns named by the caller.

    `model_columns`: one column or several, joined with ``/`` into the model id (default ``model``, and
    ``pretrained`` when present); `dataset_column` (default ``dataset``); `value_column` (default the
    first of ``value``, ``top1``, ``acc1`` present; percent or fraction decided on the column);
    `where`: ``{column: value}``, keep only rows that match all. Rows whose dataset is not ImageNet
    or a natural shift (nor in `datasets`) are left out with a note in ``attrs["notes"]``."""
    path = Path(path)
    frame = read_csv(path)
    if model_columns is None:
        model_columns = ["model", "pretrained"] if {"model", "pretrained"} <= set(frame.columns) else ["model"]
    model_columns = [model_columns] if isinstance(model_columns, str) else list(model_columns)
    dataset_column = dataset_column or "dataset"
    if value_column is None:
        value_column = next((c for c in VALUE_COLUMNS if c in frame.columns), VALUE_COLUMNS[0])
    _missing(frame, [*model_columns, dataset_column, value_column], path, "columns named for the model, dataset "
             "and value (--model-column, --dataset-column, --value-column)")
    frame = apply_where(frame, where, path)
    return _from_columns(frame, path, model_columns, dataset_column, value_column, datasets, stem_of(path), [])


def read_clip_benchmark_csv(path, datasets=None) -> pd.DataFrame:
    """CLIP_benchmark's built CSV: one row per model × dataset (``acc1, acc5, mean_per_class_recall,
    dataset, model, pretrained, task, ..., model_fullname``). Rows of ``zeroshot_classification``
    (when there is a ``task`` column) on ImageNet and its shifts are read; model id
    ``model/pretrained`` (``@language`` appended when a ``language`` column says other than ``en``)."""
    path = Path(path)
    frame = read_csv(path)
    _missing(frame, CLIP_BENCHMARK_CSV_COLUMNS, path, "not a CLIP_benchmark CSV")
    notes = []
    if "task" in frame.columns:
        task = frame["task"].fillna("zeroshot_classification").str.strip()
        other = task != "zeroshot_classification"
        if other.any():
            notes.append(f"{path}: left out {int(other.sum())} row(s) of other tasks "
                         f"({', '.join(sorted(set(task[other])))})")
        frame = frame[~other]
    frame = frame.assign(pretrained=frame["pretrained"].fillna(""))
    if "language" in frame.columns:
        language = frame["language"].fillna("en").str.strip()
        frame = frame.assign(pretrained=frame["pretrained"].where(language.isin(["en", ""]),
                                                                  frame["pretrained"] + "@" + language))
    frame = frame.assign(dataset=frame["dataset"].str.strip())
    out = _from_columns(frame, path, ["model", "pretrained"], "dataset", "acc1", datasets, "CLIP_benchmark", notes)
    return _stamped(out, "CLIP_benchmark")


def _json_objects(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) of every non-empty line; a .json file holding one object is one line."""
    text = read_text(path, "JSON lines, one object per model")
    try:
        whole = json.loads(text)
        if isinstance(whole, dict):
            return [(1, whole)]
    except json.JSONDecodeError:
        pass
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise TableFormatError(f"{path}, line {number}: not a JSON object ({error.msg}); expected JSON lines, "
                                   f"one object per model") from None
        if not isinstance(record, dict):
            raise TableFormatError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
        out.append((number, record))
    if not out:
        raise TableFormatError(f"{path}: empty file")
    return out


def _jsonl_model(record: dict, number: int) -> str:
    key = next((k for k in JSONL_MODEL_KEYS if k in record), None)
    if key is None:
        return f"alpha={record['alpha']}" if "alpha" in record else f"line {number}"
    model = str(record[key]).strip()
    return f"{model}/{record['pretrained']}" if "pretrained" in record and key != "model_name" else model


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_json_lines(path, datasets=None) -> pd.DataFrame:
    """JSON lines, one object per model (model-soups' ``individual_model_results.jsonl``, WiSE-FT's
    results): the model id is ``model_name`` (else ``model``[/``pretrained``], ``name``, ``alpha=...``,
    or the line); every key that names ImageNet or a natural shift (``ImageNet``, ``ImageNetV2``,
    ``ImageNetSketch``, ``ImageNetR``, ``ImageNetA``, ``ObjectNet``; ``:top1`` suffixes allowed) is an
    accuracy, percent or fraction decided per key. Other numeric keys (a held-out split such as
    ``ImageNet2p``) are left out with a note; string keys and ``alpha``, ``seed``, ... are metadata."""
    path = Path(path)
    rows, meta, unknown, lines = [], {}, {}, {}
    for number, record in _json_objects(path):
        model = _jsonl_model(record, number)
        lines.setdefault(model, []).append(number)
        meta[model] = {k: v for k, v in record.items() if k in JSONL_META_KEYS and k not in JSONL_MODEL_KEYS
                       and not isinstance(v, (dict, list))}
        for key, value in record.items():
            if key in JSONL_META_KEYS or not _is_number(value):
                continue
            if is_imagenet_family(key) or canonical_dataset(key) in {canonical_dataset(d) for d in datasets or ()}:
                rows.append({"model": model, "key": key, "dataset": canonical_dataset(key), "raw": value,
                             "line": number})
            else:
                unknown[key] = unknown.get(key, 0) + 1
    dupes = {m: at for m, at in lines.items() if len(at) > 1}
    if dupes:
        model, at = next(iter(dupes.items()))
        raise TableFormatError(f"{path}: duplicate model {model!r} on lines {', '.join(map(str, at))}")
    notes = [left_out_note(str(path), unknown, sum(unknown.values()), "value(s)")] if unknown else []
    if not rows:
        raise TableFormatError(f"{path}: no key names ImageNet or a natural shift (ImageNet, ImageNetV2, "
                               f"ImageNetSketch, ImageNetR, ImageNetA, ObjectNet)" + (f"; {notes[0]}" if notes else ""))
    frame = pd.DataFrame(rows)
    clash = frame[frame.duplicated(["model", "dataset"], keep=False)]
    if len(clash):
        row = clash.iloc[0]
        keys = sorted(set(clash.loc[(clash.model == row.model) & (clash.dataset == row.dataset), "key"]))
        raise TableFormatError(f"{path}, line {row.line}: keys {keys} both name dataset {row.dataset!r}")
    values = [as_fraction(part["raw"], str(path), key, part["line"]) for key, part in frame.groupby("key", sort=False)]
    frame["value"] = pd.concat(values).astype(float)
    extra = pd.DataFrame.from_dict(meta, orient="index")
    frame = frame.drop(columns=["key", "raw", "line"]).join(extra, on="model") if len(extra.columns) else \
        frame.drop(columns=["key", "raw", "line"])
    return _stamped(_finish(frame, stem_of(path), path.name, notes), "testbed")


def _stamped(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    notes = frame.attrs.get("notes", [])
    frame = stamp_published(frame, source)
    frame.attrs["notes"] = notes
    return frame
