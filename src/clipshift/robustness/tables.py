"""Readers for results tables: this project's long ``results.csv`` and the published tables people
already have (open_clip's ``openclip_results.csv``, timm's ``results-*.csv`` folder, CLIP_benchmark
JSON files). Every reader returns the same long form::

    model, dataset, metric ("top1"), value (fraction), num_examples, source, <metadata...>

with canonical dataset ids (``imagenet``, ``imagenet-v2``, ``imagenet-sketch``, ``imagenet-r``,
``imagenet-a``, ``objectnet``; any other id, e.g. the embedded world's ``test``, ``v2``, ``sketch``,
is kept as written).

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

CANONICAL_DATASETS = ("imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet")
NATURAL_SHIFTS = CANONICAL_DATASETS[1:]

# Size of each canonical evaluation set, used as the binomial n of a published accuracy (the tables do
# not say it). ObjectNet: the images in the 113 folders that map to ImageNet classes.
DATASET_SIZES = {"imagenet": 50_000, "imagenet-v2": 10_000, "imagenet-sketch": 50_889, "imagenet-r": 30_000,
                 "imagenet-a": 7_500, "objectnet": 18_574}

_ALIASES = {
    "imagenet": ["imagenet", "imagenet1k", "imagenet-1k", "imagenet 1k", "imagenet-val", "imagenet val",
                 "ilsvrc2012", "ilsvrc-2012", "in1k"],
    "imagenet-v2": ["imagenet-v2", "imagenet v2", "imagenetv2", "imagenetv2-matched-frequency",
                    "imagenetv2 matched frequency", "imagenet-v2-matched-frequency"],
    "imagenet-sketch": ["imagenet-sketch", "imagenet sketch", "imagenet_sketch", "imagenetsketch"],
    "imagenet-r": ["imagenet-r", "imagenet r", "imagenetr", "imagenet-rendition", "imagenet rendition"],
    "imagenet-a": ["imagenet-a", "imagenet a", "imageneta", "imagenet-adversarial"],
    "objectnet": ["objectnet", "objectnet-1.0", "object net"],
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", str(name).lower())


_ALIAS_TO_ID = {_key(alias): canonical for canonical, aliases in _ALIASES.items() for alias in aliases}
# timm's results files, by file name (``results-<stem>.csv``); bare "sketch" is only an alias here,
# because the embedded world has its own `sketch` set.
_TIMM_FILES = {"imagenet": "imagenet", "imagenetv2-matched-frequency": "imagenet-v2", "sketch": "imagenet-sketch",
               "imagenet-r": "imagenet-r", "imagenet-a": "imagenet-a"}
_TIMM_SKIPPED = {"imagenet-real", "imagenet-r-clean", "imagenet-a-clean"}  # re-labelled / cleaned variants

LONG_COLUMNS = ("model", "dataset", "metric", "value")
OPENCLIP_COLUMNS = ("name", "pretrained")
TIMM_COLUMNS = ("model", "top1")
FORMATS = ("long", "openclip", "timm", "clip_benchmark")


class TableFormatError(ValueError):
    """A results table whose format could not be recognised or whose content is invalid."""


def canonical_dataset(name: str) -> str:
    """The canonical id of a dataset name ('ImageNet v2' → 'imagenet-v2'); unknown names unchanged."""
    return _ALIAS_TO_ID.get(_key(name), str(name).strip())


# --- value checks ----------------------------------------------------------------------------------------------

def _as_fraction(values: pd.Series, where: str, column: str, lines: pd.Series) -> pd.Series:
    """Accuracies of one column as fractions: numbers checked, percent detected (any value > 1)."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna() & (values.astype(str).str.strip() != "")
    if bad.any():
        i = bad.idxmax()
        raise TableFormatError(f"{where}, line {lines[i]}, column {column!r}: {values[i]!r} is not a number")
    percent = bool((numeric > 1).any())
    if percent:
        numeric = (numeric / 100).round(12)  # 75.57 / 100 → 0.7557, not 0.7556999999999999
    out_of_range = (numeric < 0) | (numeric > 1)
    if out_of_range.any():
        i = out_of_range.idxmax()
        raw = values[i]
        reason = "percent above 100" if percent and numeric[i] > 1 else "negative accuracy"
        raise TableFormatError(f"{where}, line {lines[i]}, column {column!r}: {raw!r} is not an accuracy "
                               f"({reason}; values are read as {'percent' if percent else 'fractions'})")
    return numeric


def _check_unique(frame: pd.DataFrame, keys: list[str], where: str, lines: pd.Series, what: str) -> None:
    dupes = frame[frame.duplicated(keys, keep=False)]
    if len(dupes):
        first = dupes.iloc[0]
        same = dupes[(dupes[keys] == first[keys]).all(axis=1)]
        at = ", ".join(str(lines[i]) for i in same.index)
        desc = ", ".join(f"{k}={first[k]!r}" for k in keys)
        raise TableFormatError(f"{where}: duplicate {what} ({desc}) on lines {at}")


def _read_csv(path: Path) -> pd.DataFrame:
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise TableFormatError(f"{path}: empty file") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _lines(frame: pd.DataFrame) -> pd.Series:
    """File line number of each row (header is line 1)."""
    return pd.Series(np.arange(len(frame)) + 2, index=frame.index)


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
    return out


def _timm_dataset(path: Path) -> str | None:
    stem = path.stem[len("results-"):] if path.stem.startswith("results-") else path.stem
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
    return out


def read_timm_folder(path) -> pd.DataFrame:
    """A folder of timm ``results-*.csv`` files, one per dataset.

    Model id: timm's model name, or ``name@img_size`` for a model evaluated at several image sizes
    (timm lists e.g. ``resnet50.a1_in1k`` at 224 and 288), so ids are unique and agree across files.
    The re-labelled variants (``imagenet-real``, ``*-clean``) are skipped."""
    path = Path(path)
    files = sorted(path.glob("results-*.csv"))
    files = [f for f in files if _timm_dataset(f) is not None]
    if not files:
        raise TableFormatError(f"{path}: no timm results-*.csv files in this folder")
    frame = pd.concat([read_timm_file(f) for f in files], ignore_index=True)
    sizes = frame.groupby("name")["img_size"].nunique()
    several = frame["name"].map(sizes) > 1
    frame["model"] = frame["name"].where(~several, frame["name"] + "@" + frame["img_size"].astype("Int64").astype(str))
    frame["group"] = "timm"
    frame["source"] = path.name
    columns = ["model", "dataset", "metric", "value", "num_examples", "name", "img_size", "params_m", "source", "group"]
    return frame[[c for c in columns if c in frame.columns]]


def _clip_benchmark_records(path: Path) -> list[tuple[dict, str]]:
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    if not files:
        raise TableFormatError(f"{path}: no CLIP_benchmark *.json files in this folder")
    records = []
    for file in files:
        try:
            data = json.loads(file.read_text())
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
    return frame


def detect_format(path) -> str:
    """``long``, ``openclip``, ``timm`` (a folder or one results file) or ``clip_benchmark``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results table not found: {path}")
    if path.is_dir():
        if any(path.glob("results-*.csv")):
            return "timm"
        if any(path.rglob("*.json")):
            return "clip_benchmark"
        raise TableFormatError(f"{path}: a folder with neither timm results-*.csv files nor CLIP_benchmark *.json")
    if path.suffix.lower() == ".json":
        return "clip_benchmark"
    columns = list(_read_csv(path).columns)
    if all(c in columns for c in LONG_COLUMNS):
        return "long"
    if all(c in columns for c in OPENCLIP_COLUMNS):
        return "openclip"
    if all(c in columns for c in TIMM_COLUMNS):
        return "timm"
    raise TableFormatError(
        f"{path}: unrecognised results table with columns {columns}. Known formats: long "
        f"({','.join(LONG_COLUMNS)}[,num_examples]), open_clip ({','.join(OPENCLIP_COLUMNS)},<dataset columns>), "
        f"timm ({','.join(TIMM_COLUMNS)},...: a results-<dataset>.csv file or a folder of them), "
        f"CLIP_benchmark (*.json)")


def read_results(path, format: str = "auto") -> pd.DataFrame:
    """Any supported results table (file or folder) as the long form; `format` ``auto`` detects it."""
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise ValueError(f"unknown results format {format!r}; known: {list(FORMATS)} or 'auto'")
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
})


def imagenet1k_only(model_id: str) -> bool:
    """Whether a timm model id names a model trained on ImageNet-1k alone, by its pretrained tag.

    The tag (after the ``.``; any ``@img_size`` suffix ignored) must end in ``in1k`` and contain no
    token of ``EXTRA_DATA_TOKENS`` (``convnext_base.fb_in22k_ft_in1k`` → False,
    ``resnet50.a1_in1k`` → True). A heuristic on names: check the list against your own needs."""
    name = str(model_id).split("@", 1)[0]
    if "." not in name:
        return False
    tokens = re.split(r"[_\-]", name.split(".", 1)[1].lower())
    tokens = [t for t in tokens if not t.isdigit()]  # resolution suffixes such as _384
    return bool(tokens) and tokens[-1] == "in1k" and not (set(tokens) & EXTRA_DATA_TOKENS)


BASELINE_SELECTORS = {"in1k-only": imagenet1k_only}
