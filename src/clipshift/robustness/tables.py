"""Readers for results tables: this project's long ``results.csv`` and the published tables people
already have (open_clip's ``openclip_results.csv``, timm's ``results-*.csv`` folder, CLIP_benchmark
JSON files; CLIP_benchmark's built CSV, JSON lines and long tables with named columns are read by
:mod:`.formats`). Every reader returns the same long form::

    model, dataset, metric ("top1"), value (fraction), num_examples, source, <metadata...>, protocol

with the ``protocol`` stamp each source documents (:mod:`.protocols`; this project's rows carry their own,
a long table with named columns none).

with canonical dataset ids (``imagenet``, ``imagenet-v2``, ``imagenet-sketch``, ``imagenet-r``,
``imagenet-a``, ``objectnet``, through the alias table of :mod:`.datasets`; any other id, e.g. the
embedded world's ``test``, ``v2``, ``sketch``, is kept as written by the long format).

Percent vs fraction is decided per column (per file for timm and the long form): a column with any
value above 1 holds percentages and is divided by 100. A value that is then outside [0, 1], or not a
number, is an error that names the file, the line and the column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import TableFormatError, as_fraction as _as_fraction, check_unique as _check_unique, lines_of as _lines
from ._io import base_suffix, read_csv as _read_csv, read_text
from .datasets import CANONICAL_DATASETS, DATASET_ALIASES, DATASET_SIZES, NATURAL_SHIFTS, canonical_dataset
from .formats import (CLIP_BENCHMARK_CSV_COLUMNS, read_clip_benchmark_csv, read_columns_table,
                      read_json_lines)
from .protocols import PROTOCOL_COLUMN, stamp_published

__all__ = ["BASELINE_SELECTORS", "CANONICAL_DATASETS", "DATASET_ALIASES", "DATASET_SIZES", "FORMATS",
           "NATURAL_SHIFTS", "TableFormatError", "canonical_dataset", "detect_format", "imagenet1k_only",
           "read_clip_benchmark", "read_long_table", "read_openclip_table", "read_results", "read_timm_file",
           "read_timm_folder"]

# timm's results files, by file name (``results-<stem>.csv``); bare "sketch" is only an alias here,
# because the embedded world has its own `sketch` set.
_TIMM_FILES = {"imagenet": "imagenet", "imagenetv2-matched-frequency": "imagenet-v2", "sketch": "imagenet-sketch",
               "imagenet-r": "imagenet-r", "imagenet-a": "imagenet-a"}
_TIMM_SKIPPED = {"imagenet-real", "imagenet-r-clean", "imagenet-a-clean"}  # re-labelled / cleaned variants

LONG_COLUMNS = ("model", "dataset", "metric", "value")
ACCURACY_COLUMNS = ("top1", "acc1", "accuracy")  # a long table's one accuracy column (any case)
CLIP_BENCHMARK_MARKERS = ("acc5", "mean_per_class_recall", "task", "model_fullname")  # beside its key columns
OPENCLIP_COLUMNS = ("name", "pretrained")
TIMM_COLUMNS = ("model", "top1")
FORMATS = ("long", "openclip", "timm", "clip_benchmark", "clip_benchmark_csv", "jsonl", "columns")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


# --- readers ---------------------------------------------------------------------------------------------------

def read_long_table(path) -> pd.DataFrame:
    """This project's long ``results.csv``: ``model,dataset,metric,value[,num_examples,...]``."""
    path = Path(path)
    frame = _read_csv(path)
    missing = [c for c in LONG_COLUMNS if c not in frame.columns]
    if missing:
        raise TableFormatError(f"{path}: not a long results table, missing column(s) {missing}")
    lines = _lines(frame)
    frame["dataset"] = frame["dataset"].map(canonical_dataset)
    _check_unique(frame, ["model", "dataset", "metric"], str(path), lines, "result")
    top1 = frame["metric"] == "top1"
    value = pd.to_numeric(frame["value"], errors="coerce")
    if top1.any():
        value[top1] = _as_fraction(frame.loc[top1, "value"], str(path), "value", lines)
    frame["value"] = value.astype(float)
    if "num_examples" in frame.columns:
        frame["num_examples"] = pd.to_numeric(frame["num_examples"], errors="coerce")
    else:
        frame["num_examples"] = np.nan
    for column in frame.columns:  # metadata back to numbers where they are numbers
        if column not in ("model", "dataset", "metric", "value", "num_examples", "group"):
            converted = pd.to_numeric(frame[column], errors="coerce")
            if converted.notna().sum() == frame[column].notna().sum():
                frame[column] = converted
    frame["source"] = path.name
    return frame


def read_openclip_table(path) -> pd.DataFrame:
    """open_clip's ``openclip_results.csv``: one row per ``name,pretrained``; model id ``name/pretrained``.

    Only the columns that are ImageNet or one of its natural shifts are read."""
    path = Path(path)
    frame = _read_csv(path)
    missing = [c for c in OPENCLIP_COLUMNS if c not in frame.columns]
    if missing:
        raise TableFormatError(f"{path}: not an open_clip results table, missing column(s) {missing}")
    columns = {c: canonical_dataset(c) for c in frame.columns if canonical_dataset(c) in CANONICAL_DATASETS}
    if not columns:
        raise TableFormatError(f"{path}: an open_clip table with none of the ImageNet columns "
                               f"('ImageNet 1k', 'ImageNet v2', ...); columns: {list(frame.columns)}")
    clash = pd.Series(list(columns.values())).duplicated()
    if clash.any():
        raise TableFormatError(f"{path}: two columns name dataset {list(columns.values())[int(clash.idxmax())]!r}")
    lines = _lines(frame)
    _check_unique(frame, ["name", "pretrained"], str(path), lines, "model")
    model = frame["name"].str.strip() + "/" + frame["pretrained"].fillna("").str.strip()
    meta = {"name": frame["name"], "pretrained": frame["pretrained"]}
    if "params (M)" in frame.columns:
        meta["params_m"] = pd.to_numeric(frame["params (M)"], errors="coerce")
    parts = []
    for column, dataset in columns.items():
        value = _as_fraction(frame[column], str(path), column, lines)
        parts.append(pd.DataFrame({"model": model, "dataset": dataset, "metric": "top1", "value": value,
                                   "num_examples": DATASET_SIZES[dataset], **meta}))
    out = pd.concat(parts, ignore_index=True).dropna(subset=["value"])
    out["group"] = "open_clip"
    out["source"] = path.name
    return stamp_published(out, "open_clip")


def _timm_dataset(path: Path) -> str | None:
    stem = path.name[:len(path.name) - len(base_suffix(path)) - (3 if path.name.lower().endswith(".gz") else 0)]
    stem = stem[len("results-"):] if stem.startswith("results-") else stem
    if stem in _TIMM_SKIPPED:
        return None
    return _TIMM_FILES.get(stem, canonical_dataset(stem))


def read_timm_file(path, dataset: str | None = None) -> pd.DataFrame:
    """One timm ``results-<dataset>.csv`` (``model,img_size,top1,...``, top1 in percent)."""
    path = Path(path)
    dataset = dataset or _timm_dataset(path)
    frame = _read_csv(path)
    missing = [c for c in TIMM_COLUMNS if c not in frame.columns]
    if missing:
        raise TableFormatError(f"{path}: not a timm results file, missing column(s) {missing}")
    lines = _lines(frame)
    keys = ["model", "img_size"] if "img_size" in frame.columns else ["model"]
    _check_unique(frame, keys, str(path), lines, "model")
    out = pd.DataFrame({"name": frame["model"].str.strip(), "dataset": dataset, "metric": "top1",
                        "value": _as_fraction(frame["top1"], str(path), "top1", lines),
                        "num_examples": DATASET_SIZES.get(dataset, np.nan)})
    out["img_size"] = pd.to_numeric(frame["img_size"], errors="coerce") if "img_size" in frame.columns else np.nan
    if "param_count" in frame.columns:
        out["params_m"] = pd.to_numeric(frame["param_count"], errors="coerce")
    out["source"] = path.name
    return stamp_published(out, "timm", _timm_preprocess(frame))


def _timm_preprocess(frame: pd.DataFrame) -> pd.Series:
    """timm's per-row image size, crop fraction and interpolation, as a stamp's ``preprocess`` field."""
    parts = [frame[c].astype(str).where(frame[c].notna(), "?") if c in frame.columns else pd.Series("?", frame.index)
             for c in ("img_size", "crop_pct", "interpolation")]
    return parts[0] + "px, crop_pct " + parts[1] + ", " + parts[2]


def read_timm_folder(path) -> pd.DataFrame:
    """A folder of timm ``results-*.csv`` files, one per dataset.

    Model id: timm's model name, or ``name@img_size`` for a model evaluated at several image sizes
    (timm lists e.g. ``resnet50.a1_in1k`` at 224 and 288), so ids are unique and agree across files.
    The re-labelled variants (``imagenet-real``, ``*-clean``) are skipped."""
    path = Path(path)
    files = _timm_files(path)
    files = [f for f in files if _timm_dataset(f) is not None]
    if not files:
        raise TableFormatError(f"{path}: no timm results-*.csv files in this folder")
    frame = pd.concat([read_timm_file(f) for f in files], ignore_index=True)
    sizes = frame.groupby("name")["img_size"].nunique()
    several = frame["name"].map(sizes) > 1
    frame["model"] = frame["name"].where(~several, frame["name"] + "@" + frame["img_size"].astype("Int64").astype(str))
    frame["group"] = "timm"
    frame["source"] = path.name
    columns = ["model", "dataset", "metric", "value", "num_examples", "name", "img_size", "params_m", "source", "group",
               PROTOCOL_COLUMN]
    return frame[[c for c in columns if c in frame.columns]]


def _timm_files(path: Path) -> list[Path]:
    """A folder's ``results-*.csv`` files (gzip-compressed ``results-*.csv.gz`` too)."""
    return sorted([*path.glob("results-*.csv"), *path.glob("results-*.csv.gz")])


def _clip_benchmark_records(path: Path) -> list[tuple[dict, str]]:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise TableFormatError(f"{path}: no CLIP_benchmark *.json files in this folder")
    records = []
    for file in files:
        try:
            data = json.loads(read_text(file, "CLIP_benchmark JSON"))
        except json.JSONDecodeError as error:
            raise TableFormatError(f"{file}: not valid JSON ({error})") from None
        for i, record in enumerate(data if isinstance(data, list) else [data]):
            records.append((record, f"{file}" + (f" [entry {i}]" if isinstance(data, list) else "")))
    return records


def read_clip_benchmark(path) -> pd.DataFrame:
    """CLIP_benchmark result JSON: one file (or a folder of files, searched recursively) of
    ``{"dataset", "model", "pretrained", "task", "metrics": {"acc1", ...}}``; model id
    ``model/pretrained`` (``@language`` appended when the language is not English). Only
    ``zeroshot_classification`` runs are read."""
    path = Path(path)
    rows, seen = [], {}
    for record, where in _clip_benchmark_records(path):
        if not isinstance(record, dict):
            raise TableFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
        missing = [k for k in ("dataset", "model", "pretrained", "metrics") if k not in record]
        if missing:
            raise TableFormatError(f"{where}: not a CLIP_benchmark result, missing key(s) {missing}")
        if record.get("task", "zeroshot_classification") != "zeroshot_classification":
            continue
        metrics = record["metrics"]
        if not isinstance(metrics, dict) or "acc1" not in metrics:
            raise TableFormatError(f"{where}: metrics has no 'acc1'")
        dataset = canonical_dataset(str(record["dataset"]).removeprefix("wds/"))
        model = f"{record['model']}/{record['pretrained']}"
        language = record.get("language", "en")
        if language not in (None, "en"):
            model += f"@{language}"
        if (model, dataset) in seen:
            raise TableFormatError(f"{where}: duplicate result for model {model!r} on {dataset!r} "
                                   f"(also in {seen[model, dataset]})")
        seen[model, dataset] = where
        value = metrics["acc1"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
            raise TableFormatError(f"{where}: metrics.acc1 = {value!r} is not an accuracy")
        rows.append({"model": model, "dataset": dataset, "metric": "top1", "value": float(value),
                     "num_examples": DATASET_SIZES.get(dataset, np.nan), "name": record["model"],
                     "pretrained": record["pretrained"], "source": where})
    if not rows:
        raise TableFormatError(f"{path}: no zeroshot_classification results")
    frame = pd.DataFrame(rows)
    if (frame["value"] > 1).any():  # CLIP_benchmark writes fractions; percentages are converted as a whole
        frame["value"] = frame["value"] / 100
    frame["group"] = "CLIP_benchmark"
    return stamp_published(frame, "CLIP_benchmark")


def _json_format(path: Path) -> str:
    """``clip_benchmark`` for a JSON document of CLIP_benchmark results (an object with ``metrics``, or
    a list), ``jsonl`` for JSON lines or a single object of dataset keys."""
    if base_suffix(path) in JSONL_SUFFIXES:
        return "jsonl"
    try:
        data = json.loads(read_text(path, "CLIP_benchmark JSON or JSON lines, one object per model"))
    except json.JSONDecodeError:
        return "jsonl"  # several lines of objects; the reader names a line that is not one
    return "jsonl" if isinstance(data, dict) and "metrics" not in data else "clip_benchmark"


def _known_formats() -> str:
    return (f"long ({','.join(LONG_COLUMNS)}[,num_examples]), CLIP_benchmark CSV "
            f"({','.join(CLIP_BENCHMARK_CSV_COLUMNS)},...), open_clip ({','.join(OPENCLIP_COLUMNS)},<dataset columns>), "
            f"timm ({','.join(TIMM_COLUMNS)},...: a results-<dataset>.csv file or a folder of them), "
            f"CLIP_benchmark (*.json), JSON lines (*.jsonl, one object per model with keys such as ImageNet, "
            f"ImageNetV2), a long table (model,dataset and one of {','.join(ACCURACY_COLUMNS)}); any other long "
            f"table with --model-column, --dataset-column, --value-column")


def long_accuracy_columns(columns) -> tuple[str, str] | None:
    """(dataset column, accuracy column) of a long table written as ``model,dataset,top1`` (or
    ``model,pretrained,dataset,acc1``, ...): a ``dataset`` column and exactly one of
    :data:`ACCURACY_COLUMNS`, names in any case; None for other columns."""
    columns = [str(c) for c in columns]
    dataset = [c for c in columns if c.lower() == "dataset"]
    accuracy = [c for c in columns if c.lower() in ACCURACY_COLUMNS]
    if "model" not in columns or len(dataset) != 1 or len(accuracy) != 1:
        return None
    return dataset[0], accuracy[0]


def detect_format(path) -> str:
    """The format of a results table, from its name and columns: ``long``, ``clip_benchmark_csv`` (its key
    columns and one of :data:`CLIP_BENCHMARK_MARKERS`), ``columns`` (a long table with a ``dataset`` column
    and one accuracy column, :func:`long_accuracy_columns`; others need their columns named), ``openclip``,
    ``timm`` (a folder or one results file), ``clip_benchmark`` (JSON) or ``jsonl``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results table not found: {path}")
    if path.is_dir():
        if _timm_files(path):
            return "timm"
        if any(path.rglob("*.json")):
            return "clip_benchmark"
        raise TableFormatError(f"{path}: a folder with neither timm results-*.csv files nor CLIP_benchmark *.json")
    if base_suffix(path) in (".json", *JSONL_SUFFIXES):
        return _json_format(path)
    columns = list(_read_csv(path).columns)
    if all(c in columns for c in LONG_COLUMNS):
        return "long"
    if all(c in columns for c in CLIP_BENCHMARK_CSV_COLUMNS) and set(columns) & set(CLIP_BENCHMARK_MARKERS):
        return "clip_benchmark_csv"
    if long_accuracy_columns(columns):
        return "columns"  # model,dataset,top1: long, one accuracy column
    for fmt, needed in (("openclip", OPENCLIP_COLUMNS), ("timm", TIMM_COLUMNS)):
        if all(c in columns for c in needed):
            return fmt
    raise TableFormatError(f"{path}: unrecognised results table with columns {columns}. Known formats: "
                           f"{_known_formats()}")


def read_results(path, format: str = "auto", *, model_columns=None, dataset_column: str | None = None,
                 value_column: str | None = None, where: dict | None = None, datasets=None) -> pd.DataFrame:
    """Any supported results table (file or folder) as the long form; `format` ``auto`` detects it.

    Naming any of `model_columns`, `dataset_column`, `value_column` or `where` reads the file as a
    long table with those columns (``read_columns_table``). `datasets`: dataset names to keep besides
    ImageNet and its shifts in the formats that leave other datasets out (CLIP_benchmark CSV, JSON
    lines, named columns); what they leave out is named in ``attrs["notes"]``."""
    path = Path(path)
    named = any(v is not None for v in (model_columns, dataset_column, value_column, where))
    fmt = ("columns" if named else detect_format(path)) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown results format {format!r}; known: {list(FORMATS)} or 'auto'")
    if named and fmt != "columns":
        raise ValueError(f"model_columns, dataset_column, value_column and where describe a long table "
                         f"(format 'columns'), not format {fmt!r}")
    if not path.exists():
        raise FileNotFoundError(f"results table not found: {path}")
    if fmt == "columns":
        if not named:  # detected: model,dataset,top1 (the dataset and accuracy columns in any case)
            dataset_column, value_column = long_accuracy_columns(_read_csv(path).columns) or (None, None)
        return read_columns_table(path, model_columns, dataset_column, value_column, where, datasets)
    if fmt == "clip_benchmark_csv":
        return read_clip_benchmark_csv(path, datasets)
    if fmt == "jsonl":
        return read_json_lines(path, datasets)
    if fmt == "long":
        return read_long_table(path)
    if fmt == "openclip":
        return read_openclip_table(path)
    if fmt == "timm":
        if path.is_dir():
            return read_timm_folder(path)
        frame = read_timm_file(path)
        frame.insert(0, "model", frame.pop("name"))
        frame["group"] = "timm"
        return frame
    return read_clip_benchmark(path)


# --- picking a baseline from timm's tables ---------------------------------------------------------------------

# Tokens of a timm pretrained tag (``resnet50.a1_in1k`` → a1, in1k) that say a model saw more than
# ImageNet-1k: larger label sets, web image-text data, distillation from such models.
EXTRA_DATA_TOKENS = frozenset({
    "in21k", "in22k", "in12k", "laion", "laion2b", "laion400m", "openai", "webli", "m38m", "m30m", "ig", "ig1b",
    "ig3b", "jft", "jft300m", "yfcc", "yfcc15m", "yfcc100m", "dfn", "dfn2b", "dfn5b", "datacomp", "datacompxl",
    "cc12m", "swsl", "ssl", "wsl", "merged", "clip", "metaclip", "o365", "objects365", "ssld", "6m", "lvd142m",
    "lvd", "dinov2", "ns", "indomain",
    "swag", "seer",  # Instagram-3.6B weak supervision (SWAG), Instagram-1B self-supervision (SEER)
})
# Tokens of a timm architecture name that say the same (``hrnet_w18_ssld.paddle_in1k``: SSLD distillation
# with ImageNet-22k images).
EXTRA_DATA_ARCH_TOKENS = frozenset({"ssld"})


def imagenet1k_only(model_id: str) -> bool:
    """Whether a timm model id names a model trained on ImageNet-1k alone, by its pretrained tag.

    The tag (after the ``.``; any ``@img_size`` suffix ignored) must end in ``in1k`` and contain no
    token of ``EXTRA_DATA_TOKENS`` (``convnext_base.fb_in22k_ft_in1k`` → False,
    ``resnet50.a1_in1k`` → True), and the architecture no token of ``EXTRA_DATA_ARCH_TOKENS``
    (``hrnet_w18_ssld.paddle_in1k`` → False). A heuristic on names: check the lists against your own
    needs."""
    name = str(model_id).split("@", 1)[0]
    if "." not in name:
        return False
    arch, tag = name.lower().split(".", 1)
    tokens = [t for t in re.split(r"[_\-]", tag) if not t.isdigit()]  # resolution suffixes such as _384
    return (bool(tokens) and tokens[-1] == "in1k" and not (set(tokens) & EXTRA_DATA_TOKENS)
            and not set(re.split(r"[_\-]", arch)) & EXTRA_DATA_ARCH_TOKENS)


BASELINE_SELECTORS = {"in1k-only": imagenet1k_only}
