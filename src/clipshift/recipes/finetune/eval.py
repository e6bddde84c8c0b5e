"""Evaluation and results tables of ``clipshift finetune``: every model variant (zero-shot, linear
probe, fine-tuned, LP-FT, each WiSE-FT α) scored by its own linear head through the one evaluation
loop (:func:`clipshift.evaluate.loop.evaluate`), the baseline rows, and the WiSE-FT table.

Features are cached (``cache_dir``) keyed by the image tower alone: the zero-shot model and the linear
probe, which share the frozen tower, are encoded once, and a resumed run re-encodes only the models
whose weights changed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from ...data.eval_sets import eval_set_entries, open_eval_set
from ...data.imagenet import EvalSuite
from ...evaluate.heads import build_head
from ...evaluate.loop import encode, evaluate
from ...models.interface import EvalModel, state_digest
from ...probe.outliers import kurtosis
from ...robustness import AVERAGE, read_results
from ...robustness.tables import BASELINE_SELECTORS
from .config import GROUP, WISE_GROUP, FinetuneConfig, mode_of, wise_name

DECODE_WORKERS = 4  # DataLoader processes decoding evaluation images, at most one per CPU


def open_eval_sets(config: FinetuneConfig, class_names: list[str]) -> list[EvalSuite]:
    """The evaluation sets, in-distribution first, by :func:`~clipshift.data.eval_sets.open_eval_set`'s
    rule: ImageNet-family names read as distributed when the classes are ImageNet's (all, or a wnid
    subset), any other folder an ImageFolder tree over `class_names`."""
    entries = eval_set_entries(config.eval_sets)
    classes = config.classes  # class_names are its names (read_inputs)
    order = [config.id_name] + [n for n in entries if n != config.id_name]
    return [open_eval_set(name, config.eval_root or ".", folder=entries[name], classes=classes) for name in order]


@dataclass(frozen=True)
class ResizeToTensor:
    """PIL image → uint8 (3, size, size), resized bilinearly as the training data are read
    (:func:`clipshift.data.load_images`); its repr identifies it in feature-cache keys."""

    size: int

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BILINEAR)
        return pil_to_tensor(image)


def variant_model(model, name: str, class_names: list[str], image_size: int | None = None) -> EvalModel:
    """A :class:`~clipshift.models.factory.ZeroShotClassifier` as an EvalModel whose features are
    identified by its image tower and pixel statistics only (not its head), so that models differing
    only in the head share cached features. `image_size`: the size image files are resized to (None
    for a model that only encodes images already in memory)."""
    wrapped = EvalModel.wrap(model, "classifier", name=name, class_names=class_names,
                             preprocess=ResizeToTensor(image_size) if image_size else None)
    pixels = torch.cat([model.pixel_scale.flatten(), model.pixel_shift.flatten()]).tolist() \
        if model.renormalise else "package"
    wrapped.weights_id = f"tower:{state_digest(model.visual)}:{pixels}"
    return wrapped


@dataclass
class Scores:
    """Every variant's rows of :func:`clipshift.evaluate.loop.evaluate` (with ``model``) and the mean
    per-example kurtosis of its image features on the in-distribution set."""

    rows: list = field(default_factory=list)
    kurtosis: dict = field(default_factory=dict)  # model → mean kurtosis of h on the id set

    @property
    def skipped(self) -> dict[str, int]:
        """Dataset → images that could not be decoded."""
        return {row["dataset"]: int(row["images_skipped"]) for row in self.rows}


def evaluate_variants(model, variants: dict[str, Callable[[], dict]], suites: list[EvalSuite], *,
                      class_names: list[str], image_size: int, batch_size: int = 256, cache_dir=None,
                      progress: bool = True) -> Scores:
    """Score every model variant (name → a function giving its state dict, e.g. a WiSE-FT mixture,
    loaded into `model`) by its own linear head on every suite, in float32; undecodable images are
    skipped and counted. The kurtosis of h (the tower's output) is taken on the first
    (in-distribution) suite, read back from the feature cache when there is one."""
    out = Scores()
    options = dict(cache_dir=cache_dir, batch_size=batch_size, workers=min(DECODE_WORKERS, os.cpu_count() or 1),
                   amp=False, progress=progress)
    for name, state in variants.items():
        model.load_state_dict(state())
        variant = variant_model(model.eval(), name, class_names, image_size)
        rows = evaluate(variant, {s.name: s for s in suites}, {"head": build_head("linear", variant)},
                        class_names=class_names, **options)
        out.rows += [{"model": name, **row} for row in rows]
        k = kurtosis(encode(variant, suites[0], name=suites[0].name, **options).features)
        out.kurtosis[name] = float(k[~torch.isnan(k)].mean())
    order = {s.name: i for i, s in enumerate(suites)}
    out.rows.sort(key=lambda row: order[row["dataset"]])  # set by set, as the results table lists them
    return out


def results_table(scores: Scores, config: FinetuneConfig, endpoint: str) -> pd.DataFrame:
    """Long results rows (``model,dataset,metric,value,num_examples,...``) of every evaluated model."""
    alphas = {wise_name(a, endpoint): a for a in config.alphas}
    rows = []
    for score in scores.rows:
        model, mode = score["model"], mode_of(score["model"])
        rows.append(dict(model=model, dataset=score["dataset"], metric="top1", value=score["top1"],
                         num_examples=score["num_examples"], images_skipped=score["images_skipped"],
                         group=WISE_GROUP if mode == "wise-ft" else GROUP[mode], mode=mode,
                         alpha=alphas.get(model), start=config.model, protocol=score.get("protocol")))
    return pd.DataFrame(rows)


def read_baseline(config: FinetuneConfig) -> pd.DataFrame:
    """The baseline models' rows: the table's rows with group 'baseline' (every row when it has none),
    narrowed by `baseline_filter` (a regular expression searched in the model id, or ``in1k-only`` as
    in ``clipshift er``); their group is set to 'baseline'."""
    table = read_results(config.baseline)
    if "group" in table.columns and (table["group"] == "baseline").any():  # e.g. a quickstart's results.csv
        table = table[table["group"] == "baseline"]
    if config.baseline_filter:
        selector = BASELINE_SELECTORS.get(config.baseline_filter)
        keep = (table["model"].astype(str).map(selector) if selector is not None
                else table["model"].astype(str).str.contains(config.baseline_filter, regex=True))
        table = table[keep.astype(bool)]
    models = table["model"].nunique()
    if models < 2:
        raise ValueError(f"baseline {config.baseline}: {models} baseline model(s) (group 'baseline'"
                         f"{', filter ' + repr(config.baseline_filter) if config.baseline_filter else ''}); "
                         f"a line needs at least 2")
    return table.assign(group="baseline").reset_index(drop=True)


def fitted_shifts(baseline: pd.DataFrame, id_dataset: str, shifts: list[str]) -> tuple[list[str], list[str]]:
    """The shifts with results of at least 2 baseline models (a line needs 2 points), and the others
    (evaluated, without ER); ValueError when the id set or every shift lacks them."""
    top1 = baseline[baseline["metric"] == "top1"]
    counts = top1.groupby("dataset")["model"].nunique()
    if counts.get(id_dataset, 0) < 2:
        raise ValueError(f"baseline: fewer than 2 models have results on the id set {id_dataset!r}; its datasets: "
                         f"{sorted(counts.index)}")
    kept = [s for s in shifts if counts.get(s, 0) >= 2]
    if not kept:
        raise ValueError(f"baseline: no shift among {shifts} has results of 2 baseline models; its datasets: "
                         f"{sorted(counts.index)}")
    return kept, [s for s in shifts if s not in kept]


def wise_table(er: pd.DataFrame, kurtosis_id: dict[str, float], alphas: list[float], endpoint: str) -> pd.DataFrame:
    """One row per α: the model, ID and average shift accuracy, average ER with its interval, the mean
    kurtosis of h on the id set, and ``best`` (the first α with the highest average shift accuracy)."""
    avg = er[er["dataset"] == AVERAGE].set_index("model")
    rows = []
    for alpha in alphas:
        model = wise_name(alpha, endpoint)
        row = avg.loc[model]
        rows.append(dict(alpha=alpha, model=model, id_accuracy=row["id_accuracy"], shift_accuracy=row["shift_accuracy"],
                         effective_robustness=row["effective_robustness"], ci_low=row["ci_low"], ci_high=row["ci_high"],
                         kurtosis=kurtosis_id[model]))
    table = pd.DataFrame(rows)
    table["best"] = False
    table.loc[table["shift_accuracy"].idxmax(), "best"] = True
    return table
