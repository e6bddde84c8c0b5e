"""``clipshift finetune CONFIG.yaml [key=value ...]``: fine-tune a CLIP model into a classifier, see what
it costs in effective robustness, and get robustness back by weight-space ensembling (WiSE-FT).

Radford et al. (2021) and Crabbé et al. (2024) adapt CLIP to ImageNet and find that in-distribution
accuracy rises while effective robustness falls; Wortsman et al. (2022) interpolate the zero-shot and
the fine-tuned weights, θ(α) = (1 − α)·θ_zero-shot + α·θ_fine-tuned, and often find α between the
endpoints better than both under distribution shift. This recipe does all of it in one run.

The classifier is the CLIP image tower with a head initialised from the zero-shot classifier (class
names × prompt templates, ensembled, times the logit scale; :class:`~clipshift.models.factory.ZeroShotClassifier`),
so step 0 *is* the zero-shot model. Modes:

- ``full``: end-to-end fine-tuning with the training engine of ``clipshift train`` (same loop,
  logging, checkpoints, exact ``--resume``, ``torchrun``); defaults are Crabbé et al.'s recipe: 10
  epochs, batch 256, lr 3e-5, AdamW with weight decay 0.1, cosine schedule after 500 warm-up steps.
- ``linear-probe``: frozen tower, multinomial logistic regression on its normalised features
  (:func:`~clipshift.evaluate.linear_probe.fit_linear_probe`, warm-started at the zero-shot head; the
  L2 penalty is chosen on a held-out part of the training data when several are given).
- ``lp-ft``: the linear probe, then full fine-tuning from the probed head (Kumar et al. 2022).

The first mode listed is the fine-tuned model that WiSE-FT interpolates (the head included).

Configuration: :mod:`.finetune_config` (the YAML keys, validation, input check).

Run directory: ``config.yaml``, ``metrics.jsonl``, ``train_state/<mode>/step-*`` (resumable),
``checkpoints/<model>/`` (``zeroshot``, ``full``, ``linear_probe``, ``lp_ft`` and the best interior
WiSE-FT α; kind ``zsclassifier``, read by ``clipshift eval --model`` and ``clipshift probe``),
``results.csv`` (the baseline rows and every model on every set, read by ``clipshift er``),
``er.csv``, ``fits.csv``, ``wise.csv``, ``figures/wise_*.png``, ``report.md``, ``report.html`` and
``facts.json``. With the embedded world, ``world`` links to the evaluation sets' folder so that
``clipshift probe --run`` reads the run like a quickstart run.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import yaml
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from .. import __version__
from .._progress import progress_bar
from ..data import EvalImageFolder
from ..data.imagenet import IMAGENET_SUITES, EvalSuite, SuiteDataset, open_suite, score
from ..distributed import default_device, init_distributed_from_env
from ..evaluate.linear_probe import fit_linear_probe, probe_logits
from ..evaluate.zeroshot import top1_accuracy, zero_shot_weights
from ..models.factory import MEAN, STD, ModelSpec, atomic_write_text, build_model, normalize_images, save_checkpoint
from ..models.wise import interpolate_weights
from ..probe.outliers import kurtosis
from ..report_html import write_html_report
from ..robustness import AVERAGE, compute_effective_robustness, read_results
from ..robustness.tables import BASELINE_SELECTORS
from ..train.loop import train
from .finetune_config import (GROUP, MODEL_NAME, MODES, WISE_GROUP, ZERO_SHOT, FinetuneConfig, ProbeSettings,
                              check_inputs, load_finetune_config, mode_of, wise_name)
from .finetune_report import plot_wise, write_finetune_report
from .quickstart import Log
from .train import build_training_data, class_names_for

EVAL_CHUNK = 2048  # images decoded at once; every model variant scores a chunk before the next is decoded
DECODE_THREADS = 4
TEXT_CLASSES_PER_BATCH = 100  # zero-shot head built this many classes at a time (bounded memory for ImageNet)

__all__ = ["run_finetune", "train_modes", "FinetuneConfig", "ProbeSettings", "load_finetune_config", "check_inputs",
           "load_clip", "init_from_zero_shot", "fit_probe_head", "MODES", "MODEL_NAME", "ZERO_SHOT"]


# --- the zero-shot classifier ------------------------------------------------------------------------------------

@dataclass
class StartingPoint:
    """The CLIP model fine-tuning starts from, as :func:`load_clip` found it."""

    clip: torch.nn.Module
    tokenizer: Callable
    architecture: str
    pixel_mean: tuple
    pixel_std: tuple
    image_size: int
    name: str


def load_clip(model: str, pretrained: str | None = None) -> StartingPoint:
    """A CLIP model from this package's checkpoint folder, or an open_clip architecture with weights
    (``pretrained``: a local file or an open_clip tag), through :func:`clipshift.models.load.load_model`."""
    import open_clip

    from ..models.load import load_model

    loaded = load_model(model, pretrained)
    if loaded.kind != "clip":
        raise ValueError(f"model {model!r} is a {loaded.kind}, not a CLIP model: fine-tuning starts from a model "
                         f"with an image and a text tower (the zero-shot head needs the text tower)")
    architecture = loaded.metadata["architecture"]
    if architecture.startswith("hf-hub:"):
        raise ValueError(f"model {model!r}: give an open_clip architecture name with a local weights file "
                         f"(pretrained:), so that checkpoints can be rebuilt without the hub")
    if loaded.metadata.get("library") == "clipshift":
        mean, std = MEAN, STD
    else:
        cfg = getattr(loaded.module.visual, "preprocess_cfg", {}) or {}
        mean, std = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN), cfg.get("std", open_clip.OPENAI_DATASET_STD)
    size = open_clip.get_model_config(architecture)["vision_cfg"]["image_size"]
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    return StartingPoint(loaded.module.float().eval(), loaded.tokenizer, architecture, tuple(map(float, mean)),
                         tuple(map(float, std)), size, loaded.name)


def zero_shot_head(clip, tokenizer, class_names: list[str], templates: list[str]) -> torch.Tensor:
    """(D, C) zero-shot classifier of :func:`~clipshift.evaluate.zeroshot.zero_shot_weights`, built
    a batch of classes at a time."""
    parts = [zero_shot_weights(clip, tokenizer, class_names[i : i + TEXT_CLASSES_PER_BATCH], templates)
             for i in range(0, len(class_names), TEXT_CLASSES_PER_BATCH)]
    return torch.cat(parts, dim=1).float().cpu()


def init_from_zero_shot(clip, tokenizer, spec: ModelSpec, templates: list[str]) -> torch.nn.Module:
    """A :class:`~clipshift.models.factory.ZeroShotClassifier` for `spec` (kind ``zsclassifier``) with
    `clip`'s image tower and the head logit_scale · zero-shot weights (C, D), zero bias: its
    predictions are the zero-shot model's (its logits are the zero-shot cosine similarities times
    the logit scale)."""
    if spec.kind != "zsclassifier":
        raise ValueError(f"spec.kind must be 'zsclassifier', got {spec.kind!r}")
    model = build_model(spec)
    model.visual.load_state_dict(clip.visual.state_dict())
    weights = zero_shot_head(clip, tokenizer, list(spec.class_names), templates)
    with torch.no_grad():
        model.head.weight.copy_(clip.logit_scale.exp().float().cpu() * weights.T)
        model.head.bias.zero_()
    return model.eval()


def resolve_finetune_templates(spec: str, classes: str) -> list[str]:
    """Prompt templates: ``world`` (the embedded world's), ``openai``, ``simple`` or a file; ``auto``
    is ``world`` for the world's classes, else ``openai``."""
    from ..evaluate.real import resolve_templates
    from ..world.captions import ZERO_SHOT_TEMPLATES

    if spec == "auto":
        spec = "world" if classes == "world" else "openai"
    return list(ZERO_SHOT_TEMPLATES) if spec == "world" else resolve_templates(spec)


# --- linear probe ------------------------------------------------------------------------------------------------

@torch.no_grad()  # not inference_mode: the probe's autograd reads these features
def tower_features(model, data, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-tower features (N, D) and labels (N,) of training data, in memory or streamed (one epoch)."""
    model.eval()
    device = next(model.parameters()).device
    feats, labels = [], []
    if getattr(data, "streaming", False):
        batches = []
        for step in range(data.steps_per_epoch):
            data.fetch(step)
            batches.append(data.batch(torch.arange(data.batch_size)))
    else:
        batches = (data.batch(torch.arange(i, min(i + batch_size, len(data)))) for i in range(0, len(data), batch_size))
    for batch in batches:
        feats.append(model.encode_image(normalize_images(batch["images"].to(device))).float().cpu())
        labels.append(batch["labels"])
    return torch.cat(feats), torch.cat(labels)


def fit_probe_head(features: torch.Tensor, labels: torch.Tensor, num_classes: int, settings: ProbeSettings,
                   init: tuple[torch.Tensor, torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The linear probe (W (C, D), b (C,)) on normalised features, warm-started at `init`; with several
    penalties the one with the best held-out accuracy is refitted on all the data. The summary says
    which penalty was used and each one's held-out accuracy."""
    penalties = settings.penalties()
    held_out, fitted = {}, {}
    if len(penalties) > 1:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
        cut = max(1, int(settings.holdout * len(labels)))
        val, fit = order[:cut], order[cut:]
        for penalty in penalties:
            fitted[penalty] = fit_linear_probe(features[fit], labels[fit], num_classes, weight_decay=penalty,
                                               max_iter=settings.max_iter, init=init)
            held_out[penalty] = top1_accuracy(probe_logits(features[val], *fitted[penalty]), labels[val])
    chosen = max(penalties, key=lambda p: held_out.get(p, 0.0))  # the first of equals
    w, b = fit_linear_probe(features, labels, num_classes, weight_decay=chosen, max_iter=settings.max_iter,
                            init=fitted.get(chosen, init))  # the refit starts from the held-out fit
    train_acc = top1_accuracy(probe_logits(features, w, b), labels)
    return w, b, {"weight_decay": chosen, "held_out_accuracy": held_out, "train_accuracy": train_acc}


# --- evaluation ----------------------------------------------------------------------------------------------------

def open_eval_sets(config: FinetuneConfig, class_names: list[str]) -> list[EvalSuite]:
    """The evaluation sets, in-distribution first: ImageNet-family suites read as distributed (with the
    1000 ImageNet classes), any other folder as an ImageFolder tree over `class_names`."""
    paths = config.eval_paths()
    order = [config.id_name] + [n for n in paths if n != config.id_name]
    suites = []
    for name in order:
        if name in IMAGENET_SUITES and len(class_names) == 1000:
            suites.append(open_suite(name, paths[name]))
            continue
        folder = EvalImageFolder(paths[name], class_names)
        partial = len(folder.class_indices) < len(class_names)
        suites.append(EvalSuite(name=name, root=folder.root, samples=folder.samples,
                                target_classes=[(i,) for i in range(len(class_names))], target_names=list(class_names),
                                class_indices=folder.class_indices if partial else None, num_classes=len(class_names)))
    return suites


def _resize(size: int) -> Callable:
    def transform(image: Image.Image) -> torch.Tensor:  # as the training data are read (clipshift.data.load_images)
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return pil_to_tensor(image)

    return transform


@dataclass
class Scores:
    """Top-1 of every (model, dataset) and per-example kurtosis of every model's h on the id set."""

    top1: dict = field(default_factory=dict)  # (model, dataset) → [correct, images]
    skipped: dict = field(default_factory=dict)  # dataset → undecodable images
    kurtosis: dict = field(default_factory=dict)  # model → list of (N,) tensors

    def mean_kurtosis(self) -> dict[str, float]:
        """Model → mean per-example kurtosis of h on the in-distribution set (constant rows left out)."""
        out = {}
        for model, parts in self.kurtosis.items():
            k = torch.cat(parts)
            out[model] = float(k[~torch.isnan(k)].mean())
        return out


@torch.inference_mode()
def evaluate_variants(model, variants: dict[str, Callable[[], dict]], suites: list[EvalSuite], *, image_size: int,
                      batch_size: int = 256, progress: bool = True) -> Scores:
    """Score every model variant (name → a function giving its state dict, e.g. a WiSE-FT mixture)
    on every suite with `model`'s architecture. Images are decoded once, a chunk at a time, and each
    chunk is scored by every variant; undecodable images are skipped and counted. The kurtosis of h
    (the tower's output) is recorded on the first (in-distribution) suite."""
    device = next(model.parameters()).device
    out = Scores()
    total = sum(len(s) for s in suites) * len(variants)
    with progress_bar(total=total, desc="evaluate", unit="img", enabled=progress) as bar, \
            ThreadPoolExecutor(DECODE_THREADS) as pool:
        for suite in suites:
            dataset = SuiteDataset(suite, _resize(image_size))
            for start in range(0, len(suite), EVAL_CHUNK):
                items = list(pool.map(dataset.__getitem__, range(start, min(start + EVAL_CHUNK, len(suite)))))
                kept = [item for item in items if item[0] is not None]
                out.skipped[suite.name] = out.skipped.get(suite.name, 0) + len(items) - len(kept)
                if not kept:
                    bar.update(len(items) * len(variants))
                    continue
                images = torch.stack([item[0] for item in kept])
                targets = torch.tensor([item[1] for item in kept])
                for name, state in variants.items():
                    model.load_state_dict(state())
                    model.eval()
                    h = torch.cat([model.encode_image(normalize_images(images[i : i + batch_size].to(device))).float()
                                   for i in range(0, len(images), batch_size)])
                    metrics = score(model.head(h).cpu(), targets, suite)
                    counts = out.top1.setdefault((name, suite.name), [0.0, 0])
                    counts[0] += metrics["top1"] * metrics["num_examples"]
                    counts[1] += metrics["num_examples"]
                    if suite is suites[0]:
                        out.kurtosis.setdefault(name, []).append(kurtosis(h.cpu()))
                    bar.update(len(items))
    for suite in suites:
        if not any(n for (_, d), (_, n) in out.top1.items() if d == suite.name):
            raise ValueError(f"{suite.name}: none of the {len(suite)} images under {suite.root} could be decoded")
    return out


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


# --- the recipe ----------------------------------------------------------------------------------------------------

def run_finetune(config: FinetuneConfig, *, resume: bool = False, progress: bool = True,
                 quiet: bool = False) -> Path | None:
    """Fine-tune, interpolate, evaluate and report as configured; returns the path of report.md
    (None on the other ranks of a ``torchrun`` job, which only train)."""
    config.validate()
    check_inputs(config)
    rank, _ = init_distributed_from_env()
    log, run_dir = Log(quiet or rank != 0), Path(config.out)
    progress = progress and rank == 0
    device = default_device()

    t = time.perf_counter()
    start = load_clip(config.model, config.pretrained)
    class_names = class_names_for(config.classes)
    templates = resolve_finetune_templates(config.templates, config.classes)
    spec = ModelSpec("zsclassifier", start.architecture, class_names,
                     metadata={"start": config.model, "pretrained": config.pretrained, "templates": len(templates),
                               "pixel_mean": list(start.pixel_mean), "pixel_std": list(start.pixel_std)})
    zero_shot = init_from_zero_shot(start.clip.to(device), start.tokenizer, spec, templates)
    start.clip.cpu()  # only the image tower is trained
    suites = open_eval_sets(config, class_names)
    baseline = read_baseline(config)
    shifts, skipped = fitted_shifts(baseline, config.id_name, [s.name for s in suites[1:]])
    log.step(f"zero-shot classifier from {start.name}: {len(class_names)} classes x {len(templates)} templates",
             time.perf_counter() - t)

    image_size = config.image_size or start.image_size
    data_config = config.data_config(start.architecture, image_size)
    if rank == 0:
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run: nothing of an earlier one stays
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            for folder in ("train_state", "checkpoints"):
                shutil.rmtree(run_dir / folder, ignore_errors=True)
    t = time.perf_counter()
    data, summary = build_training_data(data_config, start.tokenizer, progress=progress)
    if rank == 0:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**asdict(config), "data": summary}, sort_keys=False))
    log.step(f"training data: {summary['images']} images", time.perf_counter() - t)

    def fresh_data():  # a stream cannot be rewound: each pass over it starts a new one
        return build_training_data(data_config, start.tokenizer, progress=False)[0] \
            if getattr(data, "streaming", False) else data

    states, facts = train_modes(config, zero_shot, spec, fresh_data, device=device, resume=resume,
                                progress=progress, log=log)
    if rank != 0:
        return None

    endpoint = MODEL_NAME[config.modes[0]]
    for name, state in states.items():
        mode = mode_of(name)
        _save(zero_shot, spec, state, run_dir / "checkpoints" / name, name=name, group=GROUP[mode], mode=mode)

    t = time.perf_counter()
    variants: dict[str, Callable[[], dict]] = {name: (lambda s=state: s) for name, state in states.items()}
    for alpha in config.alphas:
        if 0 < alpha < 1:
            variants[wise_name(alpha, endpoint)] = \
                lambda a=alpha: interpolate_weights(states[ZERO_SHOT], states[endpoint], a)
    evaluator = copy.deepcopy(zero_shot).to(device)
    scores = evaluate_variants(evaluator, variants, suites, image_size=image_size,
                               batch_size=config.eval_batch_size, progress=progress)
    log.step(f"evaluated {len(variants)} models on {len(suites)} sets", time.perf_counter() - t)

    t = time.perf_counter()
    results = _results_table(scores, config, endpoint)
    table = pd.concat([baseline, results], ignore_index=True)
    atomic_write_text(run_dir / "results.csv", table.to_csv(index=False))
    er, fits = compute_effective_robustness(table, config.id_name, shifts, n_bootstrap=config.bootstrap,
                                            baseline_models=list(baseline["model"].unique()), seed=config.seed)
    atomic_write_text(run_dir / "er.csv", er.to_csv(index=False))
    atomic_write_text(run_dir / "fits.csv", fits.to_csv(index=False))
    kurtosis_id = scores.mean_kurtosis()
    wise = wise_table(er, kurtosis_id, config.alphas, endpoint)
    atomic_write_text(run_dir / "wise.csv", wise.to_csv(index=False))
    best = wise.loc[wise["best"]].iloc[0]
    for stale in (run_dir / "checkpoints").glob("wiseft_a*"):  # from a resumed run's earlier grid
        shutil.rmtree(stale)
    if 0 < best["alpha"] < 1:  # the model one would deploy: saved like the endpoints
        _save(zero_shot, spec, interpolate_weights(states[ZERO_SHOT], states[endpoint], float(best["alpha"])),
              run_dir / "checkpoints" / best["model"], name=best["model"], group=WISE_GROUP, mode="wise-ft",
              alpha=float(best["alpha"]))
    path_models = list(wise["model"])
    datasets = [AVERAGE, *[d for d in fits["dataset"] if d != AVERAGE]]
    figures = [plot_wise(er, fits, d, run_dir / "figures" / f"wise_{re.sub(r'[^A-Za-z0-9._-]', '_', d)}.png",
                         path_models, list(wise["alpha"]), endpoint) for d in datasets]
    _link_world(run_dir, config, suites)
    log.step("effective robustness, WiSE-FT table and figures", time.perf_counter() - t)

    facts.update({"start": start.name, "architecture": start.architecture, "classes": len(class_names),
                  "templates": len(templates), "image_size": image_size, "data": summary,
                  "eval_sets": {s.name: len(s) for s in suites}, "skipped_images": scores.skipped,
                  "shifts_without_baseline": skipped, "kurtosis_id": kurtosis_id, "timings": log.timings,
                  "seeds": {"seed": config.seed, "train.seed": config.train.seed, "bootstrap": config.seed},
                  "seconds_total": round(time.perf_counter() - log.start, 1),
                  "versions": {"clipshift": __version__, "torch": torch.__version__,
                               "python": platform.python_version()}})
    report = write_finetune_report(run_dir, config, results, er, fits, wise, facts, figures)
    atomic_write_text(run_dir / "facts.json", json.dumps(facts, indent=2, default=float))
    write_html_report(run_dir)
    if not quiet:
        print(f"report: {report}")
    return report


def train_modes(config: FinetuneConfig, zero_shot, spec: ModelSpec, data_fn: Callable, *, device, resume: bool = False,
                progress: bool = True, log: Log | None = None) -> tuple[dict[str, dict], dict]:
    """Each of `config.modes` from the zero-shot classifier: the linear probe on the frozen tower's
    features (fitted once, shared by ``linear-probe`` and ``lp-ft``), and training with the engine of
    ``clipshift train`` (checkpoints in ``out/train_state/<model>``, resumable). `data_fn` gives the
    training data for one pass. Returns the state dicts (CPU) by model name, the zero-shot one
    included, and per-mode facts (probe penalty, loss history, seconds)."""
    run_dir = Path(config.out)
    zs_state = {k: v.detach().clone() for k, v in zero_shot.state_dict().items()}
    states, facts, probed = {ZERO_SHOT: zs_state}, {"modes": {}}, None
    for mode in config.modes:
        t = time.perf_counter()
        model, name, done = copy.deepcopy(zero_shot).to(device), MODEL_NAME[mode], facts["modes"].setdefault(mode, {})
        if mode in ("linear-probe", "lp-ft"):
            if probed is None:
                features, labels = tower_features(model, data_fn(), config.eval_batch_size)
                init = (zs_state["head.weight"].float(), zs_state["head.bias"].float())
                probed = fit_probe_head(features, labels, len(spec.class_names), config.probe, init, seed=config.seed)
            with torch.no_grad():
                model.head.weight.copy_(probed[0])
                model.head.bias.copy_(probed[1])
            done["probe"] = probed[2]
        if mode in ("full", "lp-ft"):
            done["history"] = train(model, data_fn(), config.train, log_path=run_dir / "metrics.jsonl",
                                    progress=progress, desc=name, checkpoint_dir=run_dir / "train_state" / name,
                                    spec=spec, resume=resume)
        states[name] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        done["seconds"] = round(time.perf_counter() - t, 1)
        if log is not None:
            log.step(f"{GROUP[mode]}: {name}", time.perf_counter() - t)
    return states, facts


def _save(template, spec: ModelSpec, state: dict, directory: Path, **metadata) -> None:
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    save_checkpoint(model, ModelSpec(spec.kind, spec.architecture, spec.class_names, {**spec.metadata, **metadata}),
                    directory)


def _results_table(scores: Scores, config: FinetuneConfig, endpoint: str) -> pd.DataFrame:
    """Long results rows (``model,dataset,metric,value,num_examples,...``) of every evaluated model."""
    alphas = {wise_name(a, endpoint): a for a in config.alphas}
    rows = []
    for (model, dataset), (correct, n) in scores.top1.items():
        mode = mode_of(model)
        rows.append(dict(model=model, dataset=dataset, metric="top1", value=correct / n, num_examples=n,
                         images_skipped=scores.skipped.get(dataset, 0),
                         group=WISE_GROUP if mode == "wise-ft" else GROUP[mode], mode=mode,
                         alpha=alphas.get(model), start=config.model))
    return pd.DataFrame(rows)


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


def _link_world(run_dir: Path, config: FinetuneConfig, suites: list[EvalSuite]) -> None:
    """With every evaluation set in one folder that has the world's attribute tables, link
    ``run_dir/world`` to it, so that ``clipshift probe --run`` reads this run like a quickstart run."""
    roots = {Path(s.root).resolve().parent for s in suites}
    if len(roots) != 1:
        return
    root, link = roots.pop(), run_dir / "world"
    if all((root / f"{s.name}.attributes.csv").is_file() for s in suites) and (link.is_symlink() or not link.exists()):
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(root, run_dir.resolve()), target_is_directory=True)
