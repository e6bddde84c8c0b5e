"""The quickstart: generate the world, train, evaluate, fit the baseline, report.

Shows the seeds' headline finding on a CPU in minutes: models trained on ``diverse`` data
sit above the baseline of ``narrow``-trained supervised models whatever their loss, while a
contrastive model trained on ``narrow`` data sits on it.

Run directory written (every file atomically):
``config.yaml``, ``world/`` (the exported data), ``checkpoints/<model>/``, ``metrics.jsonl``,
``results.csv`` (with each row's ``protocol`` stamp), ``predictions/<model>/<dataset>.parquet`` (per-image
predictions, :mod:`clipshift.evaluate.predictions`), ``er.csv``, ``fits.csv``, ``probe.csv``
(representation probes of Crabbé et al.), ``figures/*.png``, ``report.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...io import atomic_write_text
from ...evaluate import HeadSpec, build_head, evaluate
from ...evaluate.predictions import write_predictions
from ...progress import progress_bar
from ...models.factory import ModelSpec, build_model, get_tokenizer, save_checkpoint
from ...models.interface import EvalModel
from ...parallel import check_main_guard, resolve_jobs, run_largest_first
from ...probe import probe_section
from ...report_html import write_html_report
from ...robustness.explore import EXPLORER_NAME, write_explorer
from ...robustness import compute_effective_robustness, plot_all, plot_multi_id_fit
from ...robustness.colours import run_colours
from ...train.loop import TrainData, train
from ...train.objectives import model_kind
from ...world.adversarial import filter_adversarial
from ...world.captions import BARE_TEMPLATE, ZERO_SHOT_TEMPLATES
from ...world.export import export_imagefolder, plot_samples
from ...world.shapes import CLASS_NAMES
from ..common.runlog import Log, training_cost, versions
from ..common.world import EVAL_DISTRIBUTIONS, build_world, load_eval_set, load_training_set, predictor
from .config import QuickstartConfig, config_to_yaml
from .report import write_report

ID_DATASET = "test"
ID_DATASETS = ("test", "test_diverse")  # one in-distribution test set per training distribution (Shi et al.)
SHIFTS = ("v2", "sketch", "rendition", "objectnet", "adversarial")


def _train_one(config, spec, data, train_config, run_dir, progress, tokenizer=None) -> EvalModel:
    model = build_model(spec, seed=train_config.seed)
    train(model, data, train_config, log_path=run_dir / "metrics.jsonl", progress=progress, desc=spec.metadata["name"])
    save_checkpoint(model, spec, run_dir / "checkpoints" / spec.metadata["name"])
    return EvalModel.wrap(model.eval(), spec.kind, name=spec.metadata["name"], class_names=spec.class_names,
                          tokenizer=tokenizer if spec.kind == "clip" else None)


def _subset(data: dict, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(len(data["true"]))[:n])


def model_plan(config: QuickstartConfig) -> list[dict]:
    """Every model the quickstart trains, with the metadata that goes into results.csv."""
    plan = []
    for i, run in enumerate(config.baselines):
        diverse = run.distribution == "diverse"
        plan.append(dict(name=run.name(), group="baseline diverse" if diverse else "baseline",
                         objective="supervised", train_distribution=run.distribution,
                         labels=config.diverse_label_source if diverse else "true", train_size=run.train_size,
                         epochs=run.epochs, augment=run.augment, architecture=run.architecture or config.architecture,
                         seed=config.seed + 100 + i))
    for dist in ("narrow", "diverse"):
        labels = "true" if dist == "narrow" else config.diverse_label_source
        plan.append(dict(name=f"supervised_{dist}", group=f"supervised {dist}", objective="supervised",
                         train_distribution=dist, labels=labels, train_size=config.train_size,
                         epochs=config.supervised.epochs, augment=config.supervised.augment,
                         architecture=config.architecture, seed=config.seed + 1))
        plan.append(dict(name=f"contrastive_{dist}", group=f"contrastive {dist}", objective="contrastive",
                         train_distribution=dist, labels="captions", train_size=config.train_size,
                         epochs=config.contrastive.epochs, augment=config.contrastive.augment,
                         architecture=config.architecture, seed=config.seed + 2))
    return plan


def _train_data(entry: dict, sets: dict, tokenizer) -> TrainData:
    data = sets[entry["train_distribution"]]
    index = _subset(data, entry["train_size"], entry["seed"])
    images = data["images"][index]
    if entry["objective"] == "contrastive":
        return TrainData(images, tokens=tokenizer([data["captions"][i] for i in index]))
    labels = data["matched"][index] if entry["labels"] == "text_match" else data["true"][index]
    keep = labels >= 0  # text matching drops captions naming no class or several
    return TrainData(images[torch.from_numpy(keep)], labels=torch.from_numpy(labels[keep]).long())


def evaluate_model(model: EvalModel, entry: dict, eval_sets: dict, out: Path | None = None) -> list[dict]:
    """Top-1 on every evaluation set (`eval_sets`: name → ImageTensors) through the evaluation loop:
    a classifier's own head; a contrastive model's zero-shot head with the prompt ensemble and with
    the bare class name. With `out` (the run folder), each row's per-image predictions are written under
    ``out/predictions``."""
    if model.has_text:
        heads = {"": build_head(HeadSpec("zeroshot", templates=ZERO_SHOT_TEMPLATES), model, class_names=CLASS_NAMES),
                 "_bare": build_head(HeadSpec("zeroshot", templates=BARE_TEMPLATE), model, class_names=CLASS_NAMES)}
    else:
        heads = {"": build_head("linear", model)}
    rows, predictions = [], [] if out is not None else None
    for score in evaluate(model, eval_sets, heads, progress=False, class_names=CLASS_NAMES, predictions=predictions):
        suffix = score["head"]
        meta = {k: v for k, v in entry.items() if k not in ("name", "seed")}
        if suffix:
            meta["group"] = f"{entry['group']} (bare name)"
        meta["prompts"] = {"": "ensemble", "_bare": "bare"}[suffix] if model.has_text else "head"
        rows.append(dict(model=entry["name"] + suffix, dataset=score["dataset"], metric="top1", value=score["top1"],
                         num_examples=score["num_examples"], **meta, protocol=score["protocol"]))
    for record in predictions or []:
        write_predictions(out, entry["name"] + record["head"], record)
    return rows


def run_quickstart(config: QuickstartConfig, out: str | Path, *, progress: bool = True, quiet: bool = False) -> Path:
    """Run the whole quickstart into the run directory `out`; return the path of report.md."""
    check_main_guard(config.jobs, "spawn")  # a script's unguarded call would start again in every worker
    config.validate()
    run_dir = Path(out)
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    torch.manual_seed(config.seed)
    log, world_dir = Log(quiet), run_dir / "world"
    t = time.perf_counter()
    world = build_world(config.world(), world_dir, progress)
    log.step(f"world: {world['images_generated']} images generated and exported", time.perf_counter() - t)

    t = time.perf_counter()
    sets = {name: load_training_set(world_dir, name, progress) for name in ("narrow", "diverse")}
    eval_sets = {name: load_eval_set(world_dir, name, progress) for name in EVAL_DISTRIBUTIONS}
    log.step("data loaded back through the CSV and ImageFolder loaders; captions text-matched", time.perf_counter() - t)

    tokenizer = get_tokenizer(config.architecture)
    t = time.perf_counter()
    ref = dict(name="reference", group="reference", objective="supervised", train_distribution="narrow",
               labels="true", train_size=config.reference.train_size, epochs=config.reference.epochs,
               seed=config.seed + 999)
    ref_model = _fit(config, ref, sets, tokenizer, run_dir, progress)
    adversarial, adv_summary = filter_adversarial(predictor(ref_model), config.adversarial_size, seed=config.seed,
                                                  size=config.image_size, progress=progress)
    export_imagefolder(adversarial, world_dir)
    eval_sets["adversarial"] = load_eval_set(world_dir, "adversarial", progress)
    samples = {name: eval_sets[name].images[:: max(1, len(eval_sets[name]) // 12)][:12].permute(0, 2, 3, 1).numpy()
               for name in ("test", *SHIFTS)}
    samples = {"train_diverse": sets["diverse"]["images"][:12].permute(0, 2, 3, 1).numpy(), **samples}
    plot_samples(samples, run_dir / "figures" / "world_samples.png")
    log.step(f"adversarial set: kept {adv_summary['kept']} of {adv_summary['pool_drawn']} pool images "
             "that the reference model gets wrong", time.perf_counter() - t)

    plan = model_plan(config)
    jobs = min(resolve_jobs(config.jobs), len(plan))
    bar = progress_bar(total=len(plan), desc=f"models ({jobs} at a time)", unit="model", enabled=progress and jobs > 1)
    tasks = [(config, entry, sets, eval_sets, run_dir, progress and jobs == 1) for entry in plan]
    done = {}
    for i, (model_rows, seconds) in run_largest_first(train_and_evaluate, tasks, jobs, sizes=[
            training_cost(e) for e in plan], names=[e["name"] for e in plan]):
        done[i] = model_rows
        bar.update(1)
        log.step(f"trained and evaluated {plan[i]['name']}", seconds)
    bar.close()
    results = pd.DataFrame([row for i in range(len(plan)) for row in done[i]])
    _write_table(results, run_dir / "results.csv")

    t = time.perf_counter()
    er, fits, figures, multi = fit_effective_robustness(results, run_dir, config.seed)
    write_explorer(er, fits, run_dir / EXPLORER_NAME, title="clipshift quickstart: every model")
    log.step("effective robustness fitted and plotted", time.perf_counter() - t)

    t = time.perf_counter()
    probe_md = probe_section(run_dir, progress=progress)
    log.step("representations probed (kurtosis, pruning, concepts, CKA)", time.perf_counter() - t)

    facts = {"world": world, "adversarial": adv_summary, "timings": log.timings,
             "text_match": {name: sets[name]["match"] for name in sets},
             "seconds_total": log.elapsed(), "versions": versions()}
    atomic_write_text(run_dir / "facts.json", json.dumps(facts, indent=2, default=float))
    report = write_report(run_dir, config, results, er, fits, facts, figures, probe_md, multi=multi)
    page = write_html_report(run_dir)
    if not quiet:
        print(f"report: {report}\nhtml: {page}")
    return report


def train_and_evaluate(config, entry: dict, sets: dict, eval_sets: dict, run_dir: Path, progress: bool):
    """Train the model of plan `entry`, save its checkpoint, evaluate it: (results rows, seconds).
    Runs in a worker process of :func:`~clipshift.parallel.run_jobs` or in this one."""
    start = time.perf_counter()
    tokenizer = get_tokenizer(config.architecture)
    model = _fit(config, entry, sets, tokenizer, run_dir, progress)
    return evaluate_model(model, entry, eval_sets, run_dir), time.perf_counter() - start


def fit_effective_robustness(results: pd.DataFrame, run_dir: Path, seed: int):
    """ER against the `narrow` baseline on `test` (``er.csv``, ``fits.csv``, ``figures/er_*.png``) and,
    when the baseline also holds `diverse`-trained models, against the plane over both ID test sets
    (Shi et al. 2023: ``er_multi_id.csv``, ``fits_multi_id.csv``, ``figures/er_multi_id_average.png``;
    its bootstrap resamples the baseline within each training distribution, so no draw loses the
    `diverse`-trained models). The figures share one group → colour mapping (``run_colours``).
    Returns (er, fits, figures, (er_multi, fits_multi) or None)."""
    groups = results.drop_duplicates("model").set_index("model")["group"]
    narrow = sorted(groups.index[groups == "baseline"])
    er, fits = compute_effective_robustness(results, ID_DATASET, list(SHIFTS), baseline_models=narrow, seed=seed)
    _write_table(er, run_dir / "er.csv")
    _write_table(fits, run_dir / "fits.csv")
    both = sorted(groups.index[groups.isin(["baseline", "baseline diverse"])])
    if len(both) == len(narrow) or not set(ID_DATASETS) <= set(results["dataset"]):
        return er, fits, plot_all(er, fits, run_dir / "figures", colours=run_colours(er)), None
    er_multi, fits_multi = compute_effective_robustness(results, list(ID_DATASETS), list(SHIFTS),
                                                        baseline_models=both, seed=seed,
                                                        baseline_strata="train_distribution")
    _write_table(er_multi, run_dir / "er_multi_id.csv")
    _write_table(fits_multi, run_dir / "fits_multi_id.csv")
    colours = run_colours(er, er_multi)
    figures = plot_all(er, fits, run_dir / "figures", colours=colours)
    plot_multi_id_fit(er_multi, fits_multi, "average", run_dir / "figures" / "er_multi_id_average.png",
                      title="average over shifts: two ID test sets (test, test_diverse)",  # in the report's section
                      colours=colours)
    return er, fits, figures, (er_multi, fits_multi)


def _fit(config, entry, sets, tokenizer, run_dir, progress):
    kind = model_kind(entry["objective"])
    base = config.contrastive if kind == "clip" else config.supervised
    train_config = replace(base, epochs=entry["epochs"], seed=entry["seed"], augment=entry.get("augment", base.augment))
    spec = ModelSpec(kind, entry.get("architecture", config.architecture), list(CLASS_NAMES), metadata=entry)
    return _train_one(config, spec, _train_data(entry, sets, tokenizer), train_config, run_dir, progress, tokenizer)


def _write_table(table: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, table.to_csv(index=False))
