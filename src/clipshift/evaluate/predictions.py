"""Per-image predictions, kept beside the results table: what every model predicted on every image.

One Parquet file per model and dataset, ``OUT/predictions/<model>/<dataset>.parquet`` (``/`` and other
characters unsafe in a file name become ``__`` and ``_`` in the folder's name; the exact names are in
the file), one row per scored image, in the order of the dataset's samples:

- ``image_id`` (string): the image's path relative to the dataset's folder (an in-memory set: the path
  of the file it was read from, else its row number);
- ``index`` (int64): the image's position among the dataset's samples;
- ``target`` (int64): its target, a position in the file's ``target_names`` (the class folders present);
- ``pred`` (int64): the predicted class, the best of the scored classes, as an index in the model's
  label space (ImageNet: the 1000 wnids sorted; the world: its 12 classes);
- ``correct`` (bool): whether ``pred`` counts for the target (ObjectNet: any class mapped to the folder);
- ``class_1`` … ``class_K``, ``score_1`` … ``score_K`` (int64, float32): the K = min(5, scored
  classes) best scored classes, best first (``class_1`` is ``pred``), and the head's scores for them
  (cosine similarities for a zero-shot head, logits for a classifier's own head);
- ``logits`` (list of float32, with ``--save-logits``): every scored class's score, in the order of
  ``scored_classes``.

The scored class space is the results table's: ImageNet-R/-A score only their 200 classes
(``scored_classes``), ObjectNet its 125 mapped ones, unless scored over all classes. The file's schema
holds, under the key ``clipshift-predictions``, a JSON object: ``model``, ``dataset``, ``head``,
``protocol`` (the results row's stamp), ``num_classes``, ``scored_classes`` (None: all),
``target_classes`` (the classes correct for each target), ``target_names``, ``class_names``,
``images``, ``images_skipped`` and ``skipped_ids`` (undecodable images, not scored), ``format``.

:func:`read_predictions` reads a file or a folder of them back; :func:`recompute_metrics` gives
top-1, top-5, mean per-class recall and ``num_examples`` from them exactly as the results table has
them (top-1 as float32(correct / n), as the loop reports it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.imagefolder import masked_topk
from ..io import atomic_path

FORMAT_KEY = "clipshift-predictions"
FORMAT_VERSION = 1
TOP_K = 5
PREDICTIONS_DIR = "predictions"
REQUIRED_COLUMNS = ("image_id", "index", "target", "pred", "correct", "class_1", "score_1")


def image_ids(data, indices) -> list[str]:
    """The ids of `data`'s samples at `indices`: paths relative to an EvalSuite's root, an in-memory
    set's ``ids`` (the files it was read from), else the row numbers."""
    samples, ids = getattr(data, "samples", None), getattr(data, "ids", None)
    if samples is not None:
        root = str(data.root)
        return [Path(os.path.relpath(samples[i][0], root)).as_posix() for i in indices]
    return [str(ids[i]) if ids is not None else str(i) for i in indices]


def prediction_table(logits: torch.Tensor, targets: torch.Tensor, suite, ids: list[str], indices,
                     keep_logits: bool = False) -> pd.DataFrame:
    """The rows of one predictions file: (N, num_classes) `logits` scored over `suite`'s classes."""
    subset = list(range(suite.num_classes)) if suite.class_indices is None else list(suite.class_indices)
    k = min(TOP_K, len(subset))
    logits = logits.detach().float().cpu()
    top = masked_topk(logits, subset, k)
    scores = logits.gather(1, top)
    correct = torch.zeros(len(suite.target_classes), suite.num_classes, dtype=torch.bool)
    for t, classes in enumerate(suite.target_classes):
        correct[t, list(classes)] = True
    targets = torch.as_tensor(targets).long().cpu()
    table = pd.DataFrame({"image_id": ids, "index": np.asarray(indices, dtype=np.int64),
                          "target": targets.numpy(), "pred": top[:, 0].numpy(),
                          "correct": correct[targets, top[:, 0]].numpy()})
    for j in range(k):
        table[f"class_{j + 1}"] = top[:, j].numpy()
    for j in range(k):
        table[f"score_{j + 1}"] = scores[:, j].numpy()
    if keep_logits:
        table["logits"] = list(logits[:, subset].numpy())
    return table


def predictions_meta(*, dataset: str, head: str, suite, class_names, images: int, skipped_ids: list[str],
                     protocol: str | None) -> dict:
    """The metadata of one predictions file (``model`` is set when it is written)."""
    return {"format": FORMAT_VERSION, "model": None, "dataset": dataset, "head": head, "protocol": protocol,
            "num_classes": suite.num_classes, "scored_classes": suite.class_indices,
            "target_classes": [list(t) for t in suite.target_classes], "target_names": list(suite.target_names),
            "class_names": list(class_names) if class_names is not None else None, "images": int(images),
            "images_skipped": len(skipped_ids), "skipped_ids": list(skipped_ids)}


def safe_name(name: str) -> str:
    """`name` as one file or folder name (a ``/`` becomes ``__``, other unsafe characters ``_``)."""
    return re.sub(r"[^A-Za-z0-9._+=@-]", "_", str(name).replace("/", "__")) or "_"


def predictions_path(out, model: str, dataset: str) -> Path:
    """``out/predictions/<model>/<dataset>.parquet``, names made safe for a file system."""
    return Path(out) / PREDICTIONS_DIR / safe_name(model) / f"{safe_name(dataset)}.parquet"


def write_predictions(out, model: str, record: dict) -> Path:
    """Write one record of :func:`clipshift.evaluate.loop.evaluate`'s `predictions` (``table``, ``meta``)
    for the model named `model` (the results table's name) under `out`; returns the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table, meta = record["table"], {**record["meta"], "model": model}
    columns = {c: table[c].to_numpy() for c in table.columns if c != "logits"}
    arrow = pa.table(columns)
    if "logits" in table.columns:
        flat = np.stack(table["logits"].to_list()).astype(np.float32) if len(table) else np.zeros((0, 0), np.float32)
        arrow = arrow.append_column("logits", pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()),
                                                                                 flat.shape[1]))
    arrow = arrow.replace_schema_metadata({FORMAT_KEY: json.dumps(meta)})
    path = predictions_path(out, model, meta["dataset"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


# --- reading ---------------------------------------------------------------------------------------------------

def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _expected() -> str:
    return "per-image predictions written by clipshift (clipshift eval --save-predictions, the quickstart, the study)"


def read_meta(path) -> dict:
    """The metadata of the predictions file `path`; ValueError naming the file when it is not one."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except Exception as error:  # pyarrow raises ArrowInvalid, OSError, ... for what is not Parquet
        raise ValueError(f"{path}: not a Parquet file ({_first_line(error)}); expected {_expected()}") from None
    raw = (schema.metadata or {}).get(FORMAT_KEY.encode())
    if raw is None:
        raise ValueError(f"{path}: a Parquet file without the {FORMAT_KEY!r} metadata; expected {_expected()}")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: its {FORMAT_KEY!r} metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("format"), int) or "target_classes" not in meta:
        raise ValueError(f"{path}: its {FORMAT_KEY!r} metadata is not a predictions header (format, model, "
                         f"dataset, target_classes, ...)")
    if meta["format"] > FORMAT_VERSION:
        raise ValueError(f"{path}: predictions format {meta['format']} is newer than this clipshift reads "
                         f"({FORMAT_VERSION}); update clipshift")
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; a predictions file has {list(REQUIRED_COLUMNS)}, ...")
    return meta


def _read_one(path: Path, meta: dict) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path).to_pandas()
    except Exception as error:
        raise ValueError(f"{path}: cannot be read ({_first_line(error)}); expected {_expected()}") from None
    bad = table.index[(table["target"] < 0) | (table["target"] >= len(meta["target_classes"]))]
    if len(bad):
        raise ValueError(f"{path}: row {int(bad[0])}: target {int(table['target'].iloc[bad[0]])} is not one of the "
                         f"file's {len(meta['target_classes'])} targets")
    table.insert(0, "dataset", meta["dataset"])
    table.insert(0, "model", meta["model"])
    return table


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"predictions not found: {path} is neither a file nor a folder")
    root = path / PREDICTIONS_DIR if (path / PREDICTIONS_DIR).is_dir() else path
    files = sorted(root.rglob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root}: no predictions (*.parquet) in this folder; write them with "
                                f"clipshift eval --save-predictions")
    return files


def read_predictions(path, model: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    """Per-image predictions from one file, or every file under a folder (a run folder holding
    ``predictions/``, or that folder), optionally only `model`'s and/or `dataset`'s (as the results
    table names them). One row per image with ``model`` and ``dataset`` first, then the file's
    columns; ``attrs["predictions"]``: each file's metadata (see the module doc), in order.
    ValueError naming the file for a file that is not clipshift predictions, or when nothing matches."""
    path = Path(path)
    found = [(f, read_meta(f)) for f in _files(path)]
    chosen = [(f, m) for f, m in found
              if (model is None or m["model"] == model) and (dataset is None or m["dataset"] == dataset)]
    if not chosen:
        have = sorted({(m["model"], m["dataset"]) for _, m in found})
        raise ValueError(f"{path}: no predictions for model {model!r}, dataset {dataset!r}; there are "
                         f"{len(have)} (model, dataset) pairs, e.g. {have[:4]}")
    frame = pd.concat([_read_one(f, m) for f, m in chosen], ignore_index=True)
    frame.attrs["predictions"] = [m for _, m in chosen]
    return frame


def prediction_logits(table: pd.DataFrame) -> np.ndarray:
    """(N, scored classes) float32 scores of a table read from one file written with logits."""
    if "logits" not in table.columns:
        raise ValueError("these predictions hold no logits: write them with clipshift eval --save-logits")
    return np.stack(table["logits"].to_list()).astype(np.float32)


def _metrics(part: pd.DataFrame, meta: dict) -> dict:
    """Top-1, top-5, mean per-class recall of one (model, dataset): the results table's computation
    (:func:`clipshift.data.imagenet.score`) on the file's classes and targets."""
    columns = [c for c in (f"class_{j}" for j in range(1, TOP_K + 1)) if c in part and part[c].notna().all()]
    top = torch.from_numpy(part[columns].to_numpy(np.int64, copy=True))
    targets = torch.from_numpy(part["target"].to_numpy(np.int64, copy=True))
    correct = torch.zeros(len(meta["target_classes"]), meta["num_classes"], dtype=torch.bool)
    for t, classes in enumerate(meta["target_classes"]):
        correct[t, list(classes)] = True
    hits = correct[targets.unsqueeze(1), top]
    top1 = hits[:, 0].double()
    recalls = torch.stack([top1[targets == t].mean() for t in torch.unique(targets)])
    return {"top1": hits[:, 0].float().mean().item(), "top5": hits.any(dim=1).double().mean().item(),
            "mean_per_class_recall": recalls.mean().item(), "num_examples": len(part)}


def recompute_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """The results table's metrics from predictions read by :func:`read_predictions`: one row per
    (model, dataset) with ``top1``, ``top5``, ``mean_per_class_recall`` and ``num_examples``, equal to the
    results table's values to the last bit."""
    metas = {(m["model"], m["dataset"]): m for m in table.attrs.get("predictions", [])}
    rows = []
    for (model, dataset), part in table.groupby(["model", "dataset"], sort=False):
        if (model, dataset) not in metas:
            raise ValueError(f"no metadata for model {model!r} on {dataset!r}: read the table with read_predictions")
        rows.append({"model": model, "dataset": dataset, **_metrics(part, metas[model, dataset])})
    return pd.DataFrame(rows)
