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

Configuration: :mod:`.config` (the YAML keys, validation, input check). The models before
training: :mod:`.model` (the starting point, the zero-shot head, the probe). Evaluation and
tables: :mod:`.eval` (every model through :func:`clipshift.evaluate.loop.evaluate`). The
report: :mod:`.report`.

Run directory: ``config.yaml``, ``metrics.jsonl``, ``train_state/<mode>/step-*`` (resumable),
``checkpoints/<model>/`` (``zeroshot``, ``full``, ``linear_probe``, ``lp_ft`` and the best interior
WiSE-FT α; kind ``zsclassifier``, read by ``clipshift eval --model`` and ``clipshift probe``),
``results.csv`` (the baseline rows and every model on every set, read by ``clipshift er``),
``er.csv``, ``fits.csv``, ``wise.csv``, ``figures/wise_*.png``, ``report.md``, ``report.html`` and
``facts.json``; ``cache/`` holds the zero-shot head and the image features of every model on every set
(and of the training data for the probe), so that a resumed run re-encodes only what changed. With
the embedded world, ``world`` links to the evaluation sets' folder so that ``clipshift probe --run``
reads the run like a quickstart run.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.distributed as dist
import yaml

from ...io import atomic_write_text
from ...data.imagenet import EvalSuite
from ...distributed import default_device, init_distributed_from_env
from ...models.factory import ModelSpec, save_checkpoint
from ...models.wise import interpolate_weights
from ...parallel import check_main_guard
from ...report_html import write_html_report
from ...robustness import AVERAGE, compute_effective_robustness
from ...train.loop import train
from .config import (GROUP, MODEL_NAME, MODES, WISE_GROUP, ZERO_SHOT, FinetuneConfig, ProbeSettings,
                              check_inputs, load_finetune_config, mode_of, wise_name)
from .eval import (Scores, evaluate_variants, fitted_shifts, open_eval_sets, read_baseline, results_table,
                            variant_model, wise_table)
from .model import (StartingPoint, fit_probe_head, init_from_zero_shot, load_clip,
                             resolve_finetune_templates, training_features)
from .report import plot_wise, write_finetune_report
from ..common.runlog import Log, versions
from ..common.training import build_training_data, class_names_for

__all__ = ["run_finetune", "train_modes", "FinetuneConfig", "ProbeSettings", "load_finetune_config", "check_inputs",
           "load_clip", "init_from_zero_shot", "fit_probe_head", "MODES", "MODEL_NAME", "ZERO_SHOT"]


@dataclass
class Setup:
    """What a run starts from: the CLIP model, the classes and prompts, the zsclassifier `spec`, the
    evaluation sets (in-distribution first) and the baseline with the shifts it covers."""

    start: StartingPoint
    class_names: list[str]
    templates: list[str]
    spec: ModelSpec
    suites: list[EvalSuite]
    baseline: pd.DataFrame
    shifts: list[str]
    skipped: list[str]
    image_size: int
    zero_shot: torch.nn.Module | None = None


def run_finetune(config: FinetuneConfig, *, resume: bool = False, progress: bool = True,
                 quiet: bool = False) -> Path | None:
    """Fine-tune, interpolate, evaluate and report as configured; returns the path of report.md
    (None on the other ranks of a ``torchrun`` job, which train and help evaluate)."""
    check_main_guard()  # data-loader workers started with spawn would run an unguarded script's call again
    config = config.resolved().validate()
    check_inputs(config)
    rank, _ = init_distributed_from_env()
    log, run_dir = Log(quiet or rank != 0), Path(config.out)
    progress = progress and rank == 0
    device = default_device()
    setup = read_inputs(config)
    prepare_run_dir(run_dir, resume=resume, rank=rank)
    t = time.perf_counter()
    setup.zero_shot = init_from_zero_shot(setup.start.clip.to(device), setup.start.tokenizer, setup.spec,
                                          setup.templates, cache_dir=run_dir / "cache")
    setup.start.clip.cpu()  # only the image tower is trained
    log.step(f"zero-shot classifier from {setup.start.name}: {len(setup.class_names)} classes x "
             f"{len(setup.templates)} templates", time.perf_counter() - t)

    t = time.perf_counter()
    data_fn, summary = training_data(config, setup, progress=progress)
    if rank == 0:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**asdict(config), "data": summary}, sort_keys=False))
    log.step(f"training data: {summary['images']} images", time.perf_counter() - t)

    states, facts = train_modes(config, setup.zero_shot, setup.spec, data_fn, device=device, resume=resume,
                                progress=progress, log=log)
    states = rank_zero_states(states)
    endpoint = MODEL_NAME[config.modes[0]]
    if rank == 0:
        for name, state in states.items():
            mode = mode_of(name)
            _save(setup.zero_shot, setup.spec, state, run_dir / "checkpoints" / name, name=name, group=GROUP[mode],
                  mode=mode)
    t = time.perf_counter()
    scores = evaluate_models(config, setup, states, endpoint, device=device, progress=progress)
    log.step(f"evaluated {len(scores.kurtosis)} models on {len(setup.suites)} sets", time.perf_counter() - t)
    if rank != 0:
        return None

    t = time.perf_counter()
    results, er, fits, wise, figures = robustness(config, setup, states, scores, endpoint)
    log.step("effective robustness, WiSE-FT table and figures", time.perf_counter() - t)
    facts.update(run_facts(config, setup, summary, scores, log))
    report = write_finetune_report(run_dir, config, results, er, fits, wise, facts, figures)
    atomic_write_text(run_dir / "facts.json", json.dumps(facts, indent=2, default=float))
    write_html_report(run_dir)
    if not quiet:
        print(f"report: {report}")
    return report


def read_inputs(config: FinetuneConfig) -> Setup:
    """The starting CLIP model, classes, templates, evaluation sets and baseline, each checked."""
    start = load_clip(config.model, config.pretrained)
    class_names = class_names_for(config.classes)
    templates = resolve_finetune_templates(config.templates, config.classes)
    spec = ModelSpec("zsclassifier", start.architecture, class_names,
                     metadata={"start": config.model, "pretrained": config.pretrained, "templates": len(templates),
                               "pixel_mean": list(start.pixel_mean), "pixel_std": list(start.pixel_std)})
    suites = open_eval_sets(config, class_names)
    baseline = read_baseline(config)
    shifts, skipped = fitted_shifts(baseline, config.id_name, [s.name for s in suites[1:]])
    return Setup(start, class_names, templates, spec, suites, baseline, shifts, skipped,
                 config.image_size or start.image_size)


def prepare_run_dir(run_dir: Path, *, resume: bool, rank: int) -> None:
    """Make the run folder (rank 0); a fresh run first removes an earlier run's metrics, training
    state, checkpoints and cache. Every rank waits for it under ``torchrun``."""
    if rank == 0:
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        if not resume:  # a fresh run: nothing of an earlier one stays
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)
            for folder in ("train_state", "checkpoints", "cache"):
                shutil.rmtree(run_dir / folder, ignore_errors=True)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank reads the cache before it is cleared


def training_data(config: FinetuneConfig, setup: Setup, *, progress: bool) -> tuple[Callable, dict]:
    """A function giving the labelled training data for one pass, and the data summary."""
    data_config = config.data_config(setup.start.architecture, setup.image_size)
    data, summary = build_training_data(data_config, setup.start.tokenizer, progress=progress)

    def fresh_data():  # a stream cannot be rewound: each pass over it starts a new one
        return build_training_data(data_config, setup.start.tokenizer, progress=False)[0] \
            if getattr(data, "streaming", False) else data

    return fresh_data, summary


def train_modes(config: FinetuneConfig, zero_shot, spec: ModelSpec, data_fn: Callable, *, device, resume: bool = False,
                progress: bool = True, log: Log | None = None) -> tuple[dict[str, dict], dict]:
    """Each of `config.modes` from the zero-shot classifier: the linear probe on the frozen tower's
    features (fitted once, shared by ``linear-probe`` and ``lp-ft``; the features cached under
    ``out/cache``), and training with the engine of ``clipshift train`` (checkpoints in
    ``out/train_state/<model>``, resumable). `data_fn` gives the training data for one pass. Returns
    the state dicts (CPU) by model name, the zero-shot one included, and per-mode facts (probe
    penalty, loss history, seconds)."""
    run_dir = Path(config.out)
    zs_state = {k: v.detach().clone() for k, v in zero_shot.state_dict().items()}
    states, facts, probed = {ZERO_SHOT: zs_state}, {"modes": {}}, None
    for mode in config.modes:
        t = time.perf_counter()
        model, name, done = copy.deepcopy(zero_shot).to(device), MODEL_NAME[mode], facts["modes"].setdefault(mode, {})
        if mode in ("linear-probe", "lp-ft"):
            if probed is None:
                tower = variant_model(model, ZERO_SHOT, list(spec.class_names))
                features, labels = training_features(tower, data_fn(), batch_size=config.eval_batch_size,
                                                     cache_dir=run_dir / "cache", progress=progress)
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


def rank_zero_states(states: dict[str, dict]) -> dict[str, dict]:
    """Rank 0's models on every rank of a ``torchrun`` job (unchanged in one process): the ranks
    evaluate one model together, each a shard of every set, and DDP leaves each rank with the
    batch-norm statistics of its own last batch. Rank 0's are the ones saved."""
    if not (dist.is_available() and dist.is_initialized()):
        return states
    box = [states]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def evaluate_models(config: FinetuneConfig, setup: Setup, states: dict[str, dict], endpoint: str, *, device,
                    progress: bool) -> Scores:
    """Every trained model and every interior WiSE-FT α on every evaluation set (features cached
    under ``out/cache``)."""
    variants: dict[str, Callable[[], dict]] = {name: (lambda s=state: s) for name, state in states.items()}
    for alpha in config.alphas:
        if 0 < alpha < 1:
            variants[wise_name(alpha, endpoint)] = \
                lambda a=alpha: interpolate_weights(states[ZERO_SHOT], states[endpoint], a)
    evaluator = copy.deepcopy(setup.zero_shot).to(device)
    return evaluate_variants(evaluator, variants, setup.suites, class_names=setup.class_names,
                             image_size=setup.image_size, batch_size=config.eval_batch_size,
                             cache_dir=Path(config.out) / "cache", progress=progress)


def robustness(config: FinetuneConfig, setup: Setup, states: dict[str, dict], scores: Scores, endpoint: str):
    """results.csv, er.csv, fits.csv and wise.csv, the best interior WiSE-FT model's checkpoint and
    the WiSE-FT figures; returns (results of this run's models, er, fits, wise, figure paths)."""
    run_dir = Path(config.out)
    results = results_table(scores, config, endpoint)
    table = pd.concat([setup.baseline, results], ignore_index=True)
    atomic_write_text(run_dir / "results.csv", table.to_csv(index=False))
    er, fits = compute_effective_robustness(table, config.id_name, setup.shifts, n_bootstrap=config.bootstrap,
                                            baseline_models=list(setup.baseline["model"].unique()), seed=config.seed)
    atomic_write_text(run_dir / "er.csv", er.to_csv(index=False))
    atomic_write_text(run_dir / "fits.csv", fits.to_csv(index=False))
    wise = wise_table(er, scores.kurtosis, config.alphas, endpoint)
    atomic_write_text(run_dir / "wise.csv", wise.to_csv(index=False))
    best = wise.loc[wise["best"]].iloc[0]
    for stale in (run_dir / "checkpoints").glob("wiseft_a*"):  # from a resumed run's earlier grid
        shutil.rmtree(stale)
    alpha = float(best["alpha"])
    if 0 < alpha < 1:  # the model one would deploy: saved like the endpoints
        _save(setup.zero_shot, setup.spec, interpolate_weights(states[ZERO_SHOT], states[endpoint], alpha),
              run_dir / "checkpoints" / best["model"], name=best["model"], group=WISE_GROUP, mode="wise-ft", alpha=alpha)
    datasets = [AVERAGE, *[d for d in fits["dataset"] if d != AVERAGE]]
    figures = [plot_wise(er, fits, d, run_dir / "figures" / f"wise_{re.sub(r'[^A-Za-z0-9._-]', '_', d)}.png",
                         list(wise["model"]), list(wise["alpha"]), endpoint) for d in datasets]
    _link_world(run_dir, setup.suites)
    return results, er, fits, wise, figures


def run_facts(config: FinetuneConfig, setup: Setup, summary: dict, scores: Scores, log: Log) -> dict:
    """What facts.json and the report say about the run beyond its tables."""
    return {"start": setup.start.name, "architecture": setup.start.architecture, "classes": len(setup.class_names),
            "templates": len(setup.templates), "image_size": setup.image_size, "data": summary,
            "eval_sets": {s.name: len(s) for s in setup.suites}, "skipped_images": scores.skipped,
            "shifts_without_baseline": setup.skipped, "kurtosis_id": scores.kurtosis, "timings": log.timings,
            "seeds": {"seed": config.seed, "train.seed": config.train.seed, "bootstrap": config.seed},
            "seconds_total": log.elapsed(), "versions": versions()}


def _save(template, spec: ModelSpec, state: dict, directory: Path, **metadata) -> None:
    model = copy.deepcopy(template)
    model.load_state_dict(state)
    save_checkpoint(model, ModelSpec(spec.kind, spec.architecture, spec.class_names, {**spec.metadata, **metadata}),
                    directory)


def _link_world(run_dir: Path, suites: list[EvalSuite]) -> None:
    """With every evaluation set in one folder that has the world's attribute tables, link
    ``run_dir/world`` to it, so that ``clipshift probe --run`` reads this run like a quickstart run."""
    roots = {Path(s.root).resolve().parent for s in suites}
    if len(roots) != 1:
        return
    root, link = roots.pop(), run_dir / "world"
    if all((root / f"{s.name}.attributes.csv").is_file() for s in suites) and (link.is_symlink() or not link.exists()):
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(root, run_dir.resolve()), target_is_directory=True)
