"""``clipshift study``: the steps, in order.

1. data (:mod:`.data`): the world generated once per run folder, or real sources and suites;
2. plan (:mod:`.plan`): every model as a ``clipshift train`` run, ``runs/<name>/train.yaml``;
3. training, resumable, models in parallel (the SimCLR fine-tunes after their pre-training), or
   ``--plan``: the commands written for a scheduler instead (:mod:`.schedule`), without generating,
   training or decoding anything; their lines are ``--prepare`` (a generated world's set-up),
   ``clipshift train``, ``--evaluate NAME`` (one model's scores) and this command again;
4. evaluation through the one loop (:mod:`clipshift.evaluate`): ``runs/<name>/eval.csv``;
5. effective robustness, per-configuration summaries over seeds, verdicts (:mod:`.hypotheses`),
   figures, probes and the report.
"""

from __future__ import annotations

import json
import sys
from itertools import chain
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import yaml

from ...io import atomic_write_text
from ...evaluate import HeadSpec, build_head, encode, evaluate
from ...evaluate.heads import resolve_templates
from ...evaluate.loop import dataset_fingerprint
from ...evaluate.predictions import predictions_path, write_predictions
from ...models.load import file_digest, load_model
from ...parallel import check_main_guard, resolve_jobs, run_largest_first
from ...robustness import compute_effective_robustness
from ...robustness.explore import EXPLORER_NAME, write_explorer
from ...robustness.effective import AVERAGE
from ...world.captions import BARE_TEMPLATE, ZERO_SHOT_TEMPLATES
from ..common.runlog import Log, training_cost, versions
from ..common.training import check_sources, load_train_config, run_training
from .analysis import cautions, epoch_records, run_budget, summarize, summarize_shifts
from .data import (StudyData, decode_rate, evaluation_data, generated, make_world, plan_data, prepare,
                   world_domains, world_root)
from .figures import config_colours, plot_finetune_curves, plot_hypothesis
from .hypotheses import REGISTRY
from .plan import study_plan, train_run
from .schedule import plan_blocks, require_sbatch, write_plan_sh, write_plan_slurm
from .verdicts import Context

HEAD_SUFFIX = {"ensemble": "", "bare": "_bare", "probe": "_probe", "head": ""}
HEAD_LABELS = {"ensemble": "", "bare": " · bare class name", "probe": " · linear probe", "head": ""}


def _check_resume(run_dir: Path, text: str) -> None:
    path = run_dir / "config.yaml"
    if path.is_file() and path.read_text() != text:
        old, new = yaml.safe_load(path.read_text()) or {}, yaml.safe_load(text)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"{run_dir} holds a study with another configuration (differs in {changed}); "
                         "choose another --out or remove that folder")


def _run_folder(run_dir: Path, name: str) -> Path:
    return run_dir / "runs" / name


def write_train_config(config, entry: dict, run_dir: Path, distributions: dict[str, list[dict]],
                       domains: dict | None = None) -> Path:
    """``runs/<name>/train.yaml``: the ``clipshift train`` settings of `entry` (rewritten only when changed)."""
    path = _run_folder(run_dir, entry["name"]) / "train.yaml"
    text = yaml.safe_dump(train_run(config, entry, run_dir / "runs", distributions, domains), sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return path


def trained(folder: Path) -> bool:
    """Whether the run in `folder` finished: its final model is there, newer than its settings."""
    model = folder / "model" / "model.safetensors"
    return model.is_file() and (folder / "model" / "model.json").is_file() and \
        model.stat().st_mtime >= (folder / "train.yaml").stat().st_mtime


def train_entry(folder: Path, progress: bool) -> bool:
    """Train the run in `folder` unless it finished (resuming from its last checkpoint); True if trained now."""
    if trained(folder):
        return False
    config = load_train_config(folder / "train.yaml")
    run_training(config, resume=(folder / "checkpoints").is_dir(), progress=progress)
    return True


def heads_for(config, entry: dict, model, data: StudyData, cache_dir) -> dict:
    """The heads `entry` is scored with, built from the registry."""
    world_templates = config.templates in (None, "world")
    templates = ZERO_SHOT_TEMPLATES if world_templates else resolve_templates(config.templates)
    heads = {}
    for head in entry["heads"]:
        if head == "ensemble":
            heads[head] = build_head(HeadSpec("zeroshot", templates=templates), model, class_names=data.class_names)
        elif head == "bare":
            heads[head] = build_head(HeadSpec("zeroshot", templates=BARE_TEMPLATE), model, class_names=data.class_names)
        elif head == "probe":
            feats = encode(model, data.probe_set, name="probe_train", cache_dir=cache_dir, progress=False,
                           workers=config.workers)
            spec = HeadSpec("probe", train=(feats.features, feats.targets), weight_decay=config.probe_weight_decay)
            heads[head] = build_head(spec, model, class_names=data.class_names)
        else:
            heads[head] = build_head("linear", model)
    return heads


def evaluate_entry(config, entry: dict, run_dir: Path, data: StudyData) -> list[dict]:
    """Score the trained model of `entry` with each of its heads on every evaluation set; the rows
    are kept in ``runs/<name>/eval.csv`` and reused while the model file is unchanged (and its per-image
    predictions, ``predictions/<model>/<dataset>.parquet``, are there)."""
    folder = _run_folder(run_dir, entry["name"])
    kept = kept_scores(entry, folder, data)
    if kept is not None and all(predictions_path(run_dir, r["model"], r["dataset"]).is_file() for r in kept):
        return kept
    model = load_model(str(folder / "model"))
    cache_dir = None if data.world else run_dir / "cache"
    heads = heads_for(config, entry, model, data, cache_dir)
    meta = {k: v for k, v in entry.items() if k not in ("name", "heads", "init_from")}
    predictions = []
    rows = [dict(model=entry["name"] + HEAD_SUFFIX[s["head"]], dataset=s["dataset"], metric="top1", value=s["top1"],
                 num_examples=s["num_examples"], **{**meta, "config": entry["config"] + HEAD_SUFFIX[s["head"]],
                                                    "head": s["head"], "group": entry["group"] + HEAD_LABELS[s["head"]],
                                                    "protocol": s["protocol"]})
            for s in evaluate(model, data.eval_sets, heads, cache_dir=cache_dir, workers=config.workers,
                              progress=False, class_names=data.class_names, predictions=predictions)]
    for record in predictions:
        write_predictions(run_dir, entry["name"] + HEAD_SUFFIX[record["head"]], record)
    atomic_write_text(folder / "eval.json", json.dumps({"stamp": eval_stamp(entry, folder, data), "rows": rows},
                                                        default=float))
    atomic_write_text(folder / "eval.csv", pd.DataFrame(rows).to_csv(index=False))
    return rows


def finished(config, entry: dict, run_dir: Path, data: StudyData) -> bool:
    """Whether `entry` is trained and its scores are kept for the model file as it is now."""
    folder = _run_folder(run_dir, entry["name"])
    return trained(folder) and (not entry["heads"] or kept_scores(entry, folder, data) is not None)


def fingerprint_data(config, data: StudyData) -> None:
    """What the kept scores depend on besides the model: every evaluation set's content (pixels and
    targets, or files' sizes and times), the probe's training images, the class names and templates."""
    sets = {k: dataset_fingerprint(v) for k, v in data.eval_sets.items()}
    probe = dataset_fingerprint(data.probe_set) if data.probe_set is not None else None
    data.fingerprints = {"sets": sets, "probe_train": probe, "classes": data.class_names,
                         "templates": config.templates, "probe_weight_decay": config.probe_weight_decay}


def eval_stamp(entry: dict, folder: Path, data: StudyData) -> dict:
    """What `entry`'s kept scores were computed from (the probe's training images only for a probe head)."""
    if not data.fingerprints:
        raise RuntimeError("the study's data are not fingerprinted (fingerprint_data) before scores are kept")
    prints = {k: v for k, v in data.fingerprints.items() if k != "probe_train" or "probe" in entry["heads"]}
    return {"model": file_digest(folder / "model" / "model.safetensors"), "heads": entry["heads"], **prints}


def kept_scores(entry: dict, folder: Path, data: StudyData) -> list[dict] | None:
    """The rows ``eval.json`` keeps for `entry`, if they were scored for the model file as it is now."""
    cached = folder / "eval.json"
    if not cached.is_file():
        return None
    kept = json.loads(cached.read_text())
    return kept["rows"] if kept.get("stamp") == eval_stamp(entry, folder, data) else None


def train_and_evaluate(config, entry: dict, run_dir: Path, data: StudyData, progress: bool):
    """One plan entry, in a worker process or this one: (results rows, trained now?, seconds)."""
    start = time.perf_counter()
    fresh = train_entry(_run_folder(run_dir, entry["name"]), progress)
    rows = evaluate_entry(config, entry, run_dir, data) if entry["heads"] else []
    return rows, fresh, time.perf_counter() - start


def _train_reference(config, run_dir: Path, data_sources, progress: bool):
    def train_reference(entry: dict):
        write_train_config(config, entry, run_dir, data_sources)
        folder = _run_folder(run_dir, entry["name"])
        train_entry(folder, progress)
        return load_model(str(folder / "model"))

    return train_reference


def train_all(config, plan: list[dict], run_dir: Path, data: StudyData, log: Log, progress: bool) -> dict:
    """Train (or reuse) and evaluate every entry, models in parallel; the fine-tunes wait for the first
    wave (they start from a pre-training's checkpoint). Returns name → results rows."""
    previous = run_dir / "facts.json"
    seconds_of = json.loads(previous.read_text()).get("train_seconds", {}) if previous.is_file() else {}
    done, trained_now = {}, 0
    jobs = min(resolve_jobs(config.jobs), len(plan))
    for wave in waves(plan):
        # finished and scored runs are read back here; the others go to the pool of worker processes
        done_here = [e for e in wave if finished(config, e, run_dir, data)]
        todo = [e for e in wave if e not in done_here]
        tasks = [(config, entry, run_dir, data, progress and jobs == 1) for entry in todo]
        pool = run_largest_first(train_and_evaluate, tasks, min(jobs, len(todo)), sizes=[
            training_cost(e) for e in todo], names=[e["name"] for e in todo]) if todo else ()
        outcomes = chain(((e, train_and_evaluate(config, e, run_dir, data, False)) for e in done_here),
                         ((todo[i], out) for i, out in pool))  # lazily: each logged as it finishes
        for entry, (rows, fresh, seconds) in outcomes:
            done[entry["name"]], trained_now = rows, trained_now + fresh
            if fresh:
                seconds_of[entry["name"]] = round(seconds, 1)
            note = f": {config.id_dataset} {100 * rows[0]['value']:.1f}%" if rows else ""
            log.step(f"[{len(done)}/{len(plan)}] {'trained' if fresh else 'reused'} and evaluated "
                     f"{entry['name']}{note}", seconds)
    return dict(rows=done, trained=trained_now, train_seconds=seconds_of)


def waves(plan: list[dict]) -> list[list[dict]]:
    return [w for w in ([e for e in plan if not e.get("init_from")], [e for e in plan if e.get("init_from")]) if w]


def analyse(config, results: pd.DataFrame, run_dir: Path, data: StudyData) -> tuple:
    """ER against the baseline, the per-configuration summaries (average and per shift), and one
    section per hypothesis: its rows, computed verdict, the published finding beside it and figure."""
    shifts = [d for d in data.eval_sets if d != config.id_dataset]
    baseline_models = sorted(results.loc[results["config"] == "baseline", "model"].unique())
    er, fits = compute_effective_robustness(results, config.id_dataset, shifts, baseline_models=baseline_models,
                                            n_bootstrap=config.bootstrap, seed=config.seed)
    atomic_write_text(run_dir / "er.csv", er.to_csv(index=False))
    atomic_write_text(run_dir / "fits.csv", fits.to_csv(index=False))
    write_explorer(er, fits, run_dir / EXPLORER_NAME, title="clipshift study: every model")
    summary, per_shift = summarize(er), summarize_shifts(er, shifts)
    atomic_write_text(run_dir / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(run_dir / "summary_shifts.csv", per_shift.to_csv(index=False))
    base = er[(er["dataset"] == AVERAGE) & er["is_baseline"].astype(bool)]["id_accuracy"]
    ctx = Context(summary, per_shift, (float(base.min()), float(base.max())), 1 / len(data.class_names))
    sections = []
    rows_of = {}  # all rows first: the figures share one configuration → colour mapping
    for name in config.hypotheses:
        hypothesis = REGISTRY[name]
        rows_of[name] = hypothesis.rows(config, ctx) if hypothesis.rows else ctx.rows(hypothesis.keys(config))
    colours = config_colours(rows_of)
    for name, rows in rows_of.items():
        hypothesis = REGISTRY[name]
        verdict = hypothesis.verdict(rows, ctx)
        figure = plot_hypothesis(hypothesis, rows, er, fits, run_dir / "figures" / f"study_{name}.png",
                                 config.id_dataset, colours=colours)
        sections.append(dict(hypothesis=name, rows=rows, verdict=verdict.line, finding=verdict.finding,
                             published=hypothesis.published, agreement=hypothesis.agreement(verdict.finding),
                             held_equal=verdict.held_equal, caveat=verdict.caveat, figure=figure,
                             details=verdict.details + cautions(rows, len(data.class_names))))
    atomic_write_text(run_dir / "verdicts.json", json.dumps(
        [{k: v for k, v in s.items() if k not in ("rows", "figure")} for s in sections], indent=2))
    return er, fits, summary, sections


def finetune_curves(config, plan: list[dict], run_dir: Path, sections: list[dict]) -> None:
    """H5's fine-tuning rule and curve: held-out accuracy per epoch of each SimCLR fine-tune (from its
    ``metrics.jsonl``), as a figure and a paragraph added to the loss section."""
    section = next((s for s in sections if s["hypothesis"] == "loss"), None)
    curves = {}
    for entry in [e for e in plan if e.get("init_from")] if section else []:
        records = [r for r in epoch_records(_run_folder(run_dir, entry["name"])) if "holdout_accuracy" in r]
        if records:
            curves[entry["name"]] = records
    if not curves:
        return
    figure = plot_finetune_curves(curves, run_dir / "figures" / "study_loss_finetune.png")
    train = config.simclr_finetune
    kept = "; ".join(f"`{name}` kept epoch {c[-1]['best_epoch']} of {len(c)} "
                     f"({100 * max(r['holdout_accuracy'] for r in c):.1f}% held-out)" for name, c in curves.items())
    stop = (f"training stops once it has not improved for {train.patience} epochs (at most {train.epochs})"
            if train.patience else f"training runs all {train.epochs} epochs")
    section["extra"] = (f"\n**Fine-tuning rule:** {100 * train.holdout:g}% of each fine-tune's text-matched training "
                        f"rows are held out; after every epoch the accuracy on them is measured, {stop}, and the best "
                        f"epoch's weights are the model. {kept}.\n\n![fine-tuning curves](figures/{figure.name})\n")


def with_budgets(rows: list[dict], entry: dict, run_dir: Path) -> list[dict]:
    """`rows` of `entry` with its training budget (steps, images seen; a fine-tune's with its pre-training's)."""
    budget = run_budget(_run_folder(run_dir, entry["name"]))
    if entry.get("init_from"):
        budget = {k: v + run_budget(_run_folder(run_dir, entry["init_from"]))[k] for k, v in budget.items()}
    return [{**row, **budget} for row in rows]


def open_run_dir(config, out) -> Path:
    """The run folder, its settings in config.yaml (written once; another configuration there is refused)."""
    config.validate()
    run_dir = Path(out).absolute()
    text = yaml.safe_dump(asdict(config), sort_keys=False)
    _check_resume(run_dir, text)
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.yaml").is_file():
        atomic_write_text(run_dir / "config.yaml", text)
    return run_dir


def _reference_trainer(config, run_dir: Path, progress: bool):
    from .data import world_sources

    sources = world_sources(world_root(config, run_dir)) if config.data is None else None
    return _train_reference(config, run_dir, sources, progress)


def setup(config, out, log: Log, progress: bool, plan_only: bool = False) -> tuple[Path, StudyData, list[dict]]:
    """Steps 1–2: the run folder, the data, the plan and every run's train.yaml. With `plan_only` only
    what the train.yaml name (:func:`.data.plan_data`): nothing generated, trained or decoded; the
    sources are checked where they are on disk already."""
    run_dir = open_run_dir(config, out)
    torch.manual_seed(config.seed)
    data = plan_data(config, run_dir) if plan_only else \
        prepare(config, run_dir, log, progress, _reference_trainer(config, run_dir, progress))
    plan = study_plan(config)
    for entry in plan:
        write_train_config(config, entry, run_dir, data.distributions, data.domains)
    if not (plan_only and generated(config)):
        _check_sources(plan, run_dir)
    return run_dir, data, plan


def prepare_world(config, out, log: Log, progress: bool) -> Path:
    """``--prepare``, the plan's first block: a generated world made, its reference model trained, its
    adversarial set filtered, the H6 domains listed (each once per run folder). Returns the world's folder."""
    run_dir = open_run_dir(config, out)
    torch.manual_seed(config.seed)
    make_world(config, run_dir, log, progress, _reference_trainer(config, run_dir, progress))
    if config.data is None and "exposure" in config.hypotheses:
        world_domains(config, world_root(config, run_dir), run_dir)
    return world_root(config, run_dir) if config.data is None else run_dir


def write_plan(config, out, log: Log, torchrun: int = 0, slurm: bool = False, slurm_args: str = "") -> tuple:
    """``--plan``: every run's train.yaml and plan.sh (with `slurm`, plan.slurm too). Returns
    (plan.sh's path, the plan's entries, the study's data as the plan names them)."""
    python = str(Path(sys.executable).absolute())
    if slurm:
        require_sbatch()
    run_dir, data, plan = setup(config, out, log, progress=False, plan_only=True)
    blocks = plan_blocks(run_dir / "config.yaml", run_dir, waves(plan), torchrun, prepare=generated(config))
    path = write_plan_sh(run_dir / "plan.sh", blocks)
    if slurm:
        write_plan_slurm(run_dir / "plan.slurm", blocks, run_dir, python, slurm_args)
    return path, plan, data


def _check_sources(plan: list[dict], run_dir: Path) -> None:
    """Every run's data are there and readable before any training starts (a clear error naming the file)."""
    seen = set()
    for entry in plan:
        config = load_train_config(_run_folder(run_dir, entry["name"]) / "train.yaml")
        key = json.dumps([config.classes, [{k: v for k, v in s.items() if k not in ("subset_seed", "weight")}
                                           for s in config.sources]], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            check_sources(config)


def _decode_bound(config, data: StudyData, passes: float) -> str:
    """The plan's cost at the lower of the training step's rate and the files' decode rate, measured here:
    the step's is not known before training, so the decode rate gives a lower bound on the time."""
    rate = decode_rate(config, data.distributions)
    if rate is None:
        return ""
    seconds = passes / rate.total
    took = next(f"{seconds / unit:.3g} {name}" for unit, name, below in (
        (1, "s", 120), (60, "min", 7200), (3600, "hours", 172800), (86400, "days", float("inf"))) if seconds < below)
    return (f"; training from these files runs at most as fast as they decode here, {rate.total:.0f} img/s on "
            f"{rate.workers} thread{'s' * (rate.workers > 1)}: at least {took}")


def run_study(config, out, *, progress: bool = True, quiet: bool = False, plan_only: bool = False,
              torchrun: int = 0, evaluate_only: str | None = None, prepare_only: bool = False, slurm: bool = False,
              slurm_args: str = "") -> Path:
    """Run (or resume) the study into the folder `out`; return the path of its report.md (with
    `plan_only`: of plan.sh, and with `slurm` plan.slurm beside it; with `prepare_only`: of the world's
    folder; with `evaluate_only`: of that model's eval.csv)."""
    if sum([plan_only, prepare_only, evaluate_only is not None]) > 1:
        raise ValueError("--plan, --prepare and --evaluate are separate steps: give one of them")
    if (slurm or slurm_args or torchrun) and not plan_only:
        raise ValueError("--slurm, --slurm-args and --torchrun shape the plan's commands: give them with --plan")
    check_main_guard(1 if plan_only or evaluate_only else config.jobs, "spawn")  # see clipshift.spawning
    config = config.resolved()
    log = Log(quiet)
    if plan_only:
        path, plan, data = write_plan(config, out, log, torchrun, slurm, slurm_args)
        if not quiet:
            passes = sum(e["train_size"] * e["epochs"] for e in plan)
            print(f"plan: {path} ({len(plan)} training runs, {passes:.3g} image passes: size x epochs summed"
                  f"{_decode_bound(config, data, passes)})"
                  + (f"; submit it to Slurm with: bash {path.with_suffix('.slurm')}" if slurm else ""))
        return path
    if prepare_only:
        return prepare_world(config, out, log, progress)
    if evaluate_only is not None:
        return _evaluate_one(config, out, evaluate_only, quiet, progress)
    run_dir, data, plan = setup(config, out, log, progress)
    fingerprint_data(config, data)  # what kept scores are checked against
    outcome = train_all(config, plan, run_dir, data, log, progress)
    results = pd.DataFrame([row for entry in plan for row in with_budgets(outcome["rows"][entry["name"]], entry,
                                                                          run_dir)])
    atomic_write_text(run_dir / "results.csv", results.to_csv(index=False))
    t = time.perf_counter()
    er, fits, summary, sections = analyse(config, results, run_dir, data)
    finetune_curves(config, plan, run_dir, sections)
    log.step("effective robustness fitted; verdicts and figures written", time.perf_counter() - t)
    probe_md = _probe(config, plan, run_dir, log, progress)
    facts = dict(data.facts, models=len(plan), models_trained_this_run=outcome["trained"], timings=log.timings,
                 seeds=config.seeds, seconds_total=log.elapsed(),
                 versions=versions(),
                 train_seconds={e["name"]: outcome["train_seconds"][e["name"]] for e in plan
                                if e["name"] in outcome["train_seconds"]})
    if not data.world:
        facts["text_match"] = _text_match_facts(config, data, run_dir)
    atomic_write_text(run_dir / "facts.json", json.dumps(facts, indent=2, default=float))
    from .report import write_study_report

    report = write_study_report(run_dir, config, summary, fits, sections, facts, probe_md)
    if not quiet:
        print(f"report: {report}")
    return report


def _evaluate_one(config, out, name: str, quiet: bool, progress: bool) -> Path:
    """``--evaluate NAME``: one trained model scored; only its evaluation sets are read (and the probe's
    training images for a probe head): nothing generated, trained or checked besides."""
    run_dir = open_run_dir(config, out)
    plan = study_plan(config)
    entry = next((e for e in plan if e["name"] == name), None)
    if entry is None:
        raise ValueError(f"--evaluate {name!r}: no such model in the plan; models: {[e['name'] for e in plan][:8]} ...")
    if not trained(_run_folder(run_dir, name)):
        raise ValueError(f"--evaluate {name}: the model is not trained yet; run its line of plan.sh "
                         f"(clipshift train {_run_folder(run_dir, name) / 'train.yaml'}) first")
    data = evaluation_data(config, run_dir, entry["heads"], progress)
    fingerprint_data(config, data)
    evaluate_entry(config, entry, run_dir, data)
    path = _run_folder(run_dir, name) / "eval.csv"
    if not quiet:
        print(f"results: {path}")
    return path


def _text_match_facts(config, data: StudyData, run_dir: Path) -> dict:
    """Per distribution, the text-match rate (and precision, where the sources have labels) over all
    its captions, as the study's text-matched runs label them."""
    from ..common.training import TrainRunConfig, text_match_summary

    out = {}
    for name, sources in data.distributions.items():
        run = TrainRunConfig(out=str(run_dir / "runs"), classes=config.classes, labels="text_match",
                             sources=[dict(s) for s in sources])
        summary = text_match_summary(run.validate())
        if summary:
            out[name] = {"match_rate": summary["text_match_rate"],
                         **({"precision": summary["text_match_precision"]} if "text_match_precision" in summary
                            else {})}
    return out


def _probe(config, plan, run_dir: Path, log: Log, progress: bool) -> str:
    if not (config.probes and config.embedded):
        return ""
    from ...probe import probe_section

    t = time.perf_counter()
    models = {e["name"]: _run_folder(run_dir, e["name"]) / "model" for e in plan if e["objective"] != "simclr"
              and (e["config"] == "baseline" or e["seed"] == config.seeds[0])}
    markdown = probe_section(run_dir, models=models, progress=progress)
    log.step("representations probed on the first seed's models", time.perf_counter() - t)
    return markdown
