"""Per-image predictions of a quickstart-style run folder's models on its world's evaluation sets,
for agreement on the line (:mod:`.agreement_table`).

A run folder holds ``results.csv`` (which models were evaluated, and their ``group``),
``checkpoints/<model>/`` and ``world/`` (the exported evaluation sets). Where the run wrote its
per-image predictions (``predictions/``, read with ``clipshift.evaluate.read_predictions`` where this
clipshift has it) they are used as written; otherwise each set is decoded once and each model is
encoded through the evaluation loop (:func:`clipshift.evaluate.encode`) and scored with the head its
results row used: a contrastive model's zero-shot head with the world's prompt ensemble, a
classifier's own head. Rows without a checkpoint of their own (the quickstart's ``<model>_bare``:
the same model with the bare class name) are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.eval_sets import open_world_sets, suite_tensors
from ..evaluate import HeadSpec, ImageTensors, build_head, encode
from ..models.load import load_model
from ..world.captions import ZERO_SHOT_TEMPLATES
from ..world.shapes import CLASS_NAMES


def run_models(run_dir) -> pd.DataFrame:
    """The run's evaluated models that have a checkpoint: one row per model, columns ``model, group``
    (index in results.csv order)."""
    run = Path(run_dir)
    results_path = run / "results.csv"
    if not results_path.is_file():
        raise FileNotFoundError(f"{run}: no results.csv (expected a quickstart-style run folder)")
    results = pd.read_csv(results_path)
    if "group" not in results.columns:
        results["group"] = ""
    models = results.drop_duplicates("model")[["model", "group"]]
    models = models[[(run / "checkpoints" / m / "model.json").exists() for m in models["model"]]]
    if len(models) == 0:
        raise FileNotFoundError(f"{run}: none of the models of results.csv has a checkpoint under "
                                f"{run / 'checkpoints'}")
    return models.reset_index(drop=True)


def _head(model):
    if model.has_text:
        return build_head(HeadSpec("zeroshot", templates=ZERO_SHOT_TEMPLATES), model, class_names=list(CLASS_NAMES))
    return build_head("linear", model)


def saved_predictions(run_dir, models: list, datasets: list) -> tuple[dict, dict] | None:
    """(predictions: dataset → (M, N) predicted classes, labels: dataset → (N,)) as the run wrote them
    under ``predictions/``; None when it wrote none, this clipshift cannot read them, or a (model,
    dataset) pair is missing. ValueError when models were scored on different images of a dataset."""
    run = Path(run_dir)
    if not (run / "predictions").is_dir():
        return None
    try:
        from ..evaluate import read_predictions
    except ImportError:  # a clipshift without per-image predictions
        return None
    table = read_predictions(run)
    metas = {(m["model"], m["dataset"]): m for m in table.attrs["predictions"]}
    parts = {key: part.sort_values("index") for key, part in table.groupby(["model", "dataset"], sort=False)}
    if any((model, name) not in parts for model in models for name in datasets):
        return None
    predictions, labels = {}, {}
    for name in datasets:
        first = parts[(models[0], name)]
        for model in models:
            if not np.array_equal(parts[(model, name)]["index"].to_numpy(), first["index"].to_numpy()):
                raise ValueError(f"{run / 'predictions'}: {model} and {models[0]} were scored on different images "
                                 f"of {name}")
        classes = metas[(models[0], name)]["target_classes"]
        if any(len(c) != 1 for c in classes):
            return None  # several correct classes per target: not a single label per image
        labels[name] = np.array([classes[t][0] for t in first["target"]], dtype=np.int64)
        predictions[name] = np.stack([parts[(model, name)]["pred"].to_numpy(np.int64) for model in models])
    return predictions, labels


def run_predictions(run_dir, datasets=None, progress: bool = False,
                    use_saved: bool = True) -> tuple[list, dict, dict, dict]:
    """(models, predictions: dataset → (M, N) predicted classes, labels: dataset → (N,), groups: model →
    group) of the run folder's models on its world's evaluation sets (`datasets`: default all present):
    the run's own per-image predictions where it wrote them (and `use_saved`), else scored here."""
    run = Path(run_dir)
    table = run_models(run)
    groups = dict(zip(table["model"], table["group"].fillna("").astype(str)))
    suites = open_world_sets(run / "world", datasets)
    saved = saved_predictions(run, list(table["model"]), [s.name for s in suites]) if use_saved else None
    if saved is not None:
        return list(table["model"]), *saved, groups
    sets = {suite.name: ImageTensors(*suite_tensors(suite, progress=progress)) for suite in suites}
    predictions = {name: [] for name in sets}
    for model_name in table["model"]:
        model = load_model(str(run / "checkpoints" / model_name))
        head = _head(model)
        for name, data in sets.items():
            predictions[name].append(head(encode(model, data, name=name, progress=False).features).argmax(1).numpy())
    labels = {name: data.targets.numpy() for name, data in sets.items()}
    return list(table["model"]), {k: np.stack(v) for k, v in predictions.items()}, labels, groups
