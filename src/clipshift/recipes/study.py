"""``clipshift study CONFIG.yaml --out DIR``: the five-hypothesis study of Fang et al. (2022).

Which of five causes gives CLIP its effective robustness? Every configuration is trained with
several seeds on the embedded world (or on data laid out the same way, ``data_root``), evaluated on
the in-distribution set and every shift, and placed against one baseline of supervised models
trained on ``narrow`` data (Taori et al.):

1. ``size``: the same CLIP model and distribution (diverse) at several training-set sizes;
2. ``distribution``: CLIP on mixtures of narrow and diverse data (diverse fraction 0 … 1);
3. ``language_train``: CLIP on captions vs supervised training on the labels of the same images
   (narrow: true labels, the ImageNet-Captions comparison; diverse: text-matched labels, the YFCC one);
4. ``language_test``: the zero-shot head with the prompt ensemble vs the bare class name vs a
   linear probe on the frozen image features (fitted on the narrow training set);
5. ``loss``: SimCLR pre-training on the images, then fine-tuning on text-matched labels, beside
   CLIP and the supervised model on the same diverse data.

Per configuration the effective robustness (ER, average over shifts) is the mean over seeds, with a
95% t-interval over seeds: the seeds re-draw the training subset, the initialisation and the data
order, so the interval says how much of a difference the training randomness alone would make.
A hypothesis' verdict compares those intervals and is computed, never typed.

Re-running the same command into the same folder resumes: the world and every finished model are
reused (a folder holding a study with another configuration is an error).
"""

from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from scipy import stats

from .. import __version__
from ..evaluate.linear_probe import fit_linear_probe, probe_logits
from ..evaluate.zeroshot import encode_images, head_logits, top1_accuracy, zero_shot_logits, zero_shot_weights
from ..models.factory import ModelSpec, atomic_write_text, build_model, get_tokenizer, load_checkpoint, save_checkpoint
from ..robustness import compute_effective_robustness
from ..robustness.effective import AVERAGE
from ..train.loop import TrainConfig, TrainData, train
from ..world.captions import BARE_TEMPLATE, ZERO_SHOT_TEMPLATES
from ..world.shapes import CLASS_NAMES, SYNONYMS
from ..parallel import resolve_jobs, run_largest_first
from .config import BaselineRun, QuickstartConfig, load_config, read_yaml_mapping
from .quickstart import ID_DATASET, SHIFTS, Log, build_world, load_eval_set, load_training_set, training_cost
from .report import _pct, _pp

HYPOTHESES = ("size", "distribution", "language_train", "language_test", "loss")
TITLES = {
    "size": "H1 · Training-set size",
    "distribution": "H2 · Training distribution",
    "language_train": "H3 · Language supervision at training time",
    "language_test": "H4 · Language at test time",
    "loss": "H5 · The contrastive loss",
}
QUESTIONS = {
    "size": "Does more data make CLIP robust, or only more accurate?",
    "distribution": "Does the training distribution (narrow vs diverse, and mixtures) set the robustness?",
    "language_train": "Does training on captions instead of labels, on the same images, give robustness?",
    "language_test": "Do the prompts matter, and does a classifier fitted on the ID data keep the robustness?",
    "loss": "Is the contrastive image–text loss needed, or does SimCLR + text-matched labels do as well?",
}
HEADS = {"ensemble": "", "bare": "_bare", "probe": "_probe", "head": ""}
HEAD_LABELS = {"ensemble": "", "bare": " · bare class name", "probe": " · linear probe", "head": ""}
WORLD_MARKER = "world.json"


@dataclass
class StudyConfig(QuickstartConfig):
    """The quickstart's settings (world, architecture, baseline, trainers) plus the study's own."""

    train_size: int = 4000
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sizes: list[int] = field(default_factory=lambda: [2000, 4000])  # H1, CLIP on diverse data
    mixture: list[float] = field(default_factory=lambda: [0.0, 0.33, 0.67, 1.0])  # H2, diverse fractions
    hypotheses: list[str] = field(default_factory=lambda: list(HYPOTHESES))
    baselines: list[BaselineRun] = field(default_factory=lambda: [
        BaselineRun(300, 6), BaselineRun(600, 6), BaselineRun(1000, 6), BaselineRun(1500, 6),
        BaselineRun(2500, 6), BaselineRun(4000, 2), BaselineRun(4000, 4), BaselineRun(4000, 6),
        BaselineRun(1500, 4, augment=False), BaselineRun(1500, 6, architecture="clipshift-tiny-bow"),
    ])
    reference: BaselineRun = field(default_factory=lambda: BaselineRun(2000, 4))
    contrastive: TrainConfig = field(default_factory=lambda: TrainConfig("contrastive", epochs=20, batch_size=64,
                                                                         lr=2e-3))
    simclr: TrainConfig = field(default_factory=lambda: TrainConfig("simclr", epochs=10, batch_size=128, lr=2e-3))
    simclr_finetune: TrainConfig = field(default_factory=lambda: TrainConfig("supervised", epochs=4, batch_size=128,
                                                                             lr=1e-3))
    probe_weight_decay: float = 1e-4  # L2 of the H4 linear probe
    bootstrap: int = 1000  # per-model ER bootstrap draws (er.csv)
    probes: bool = True  # representation probes (Crabbé et al.) on the seed-0 models (embedded world only)
    # Real data: a folder laid out like the exported world (train_narrow.csv and train_diverse.csv with
    # filepath, caption and label columns; one ImageFolder tree per evaluation set), its class names
    # (a text file, one per line) and the shift folders to evaluate.
    data_root: str | None = None
    class_names: str | None = None
    shifts: list[str] = field(default_factory=lambda: list(SHIFTS))

    def validate(self) -> "StudyConfig":
        super().validate()
        self.simclr.validate()
        self.simclr_finetune.validate()
        if self.simclr.objective != "simclr" or self.simclr_finetune.objective != "supervised":
            raise ValueError("simclr.objective must be 'simclr' and simclr_finetune.objective 'supervised'")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {self.seeds}")
        unknown = sorted(set(self.hypotheses) - set(HYPOTHESES))
        if unknown or not self.hypotheses:
            raise ValueError(f"hypotheses: unknown {unknown}; choose among {list(HYPOTHESES)}")
        if "size" in self.hypotheses and len(set(self.sizes)) < 2:
            raise ValueError(f"sizes needs at least 2 distinct sizes for the size hypothesis, got {self.sizes}")
        bad = [n for n in self.sizes if not 1 <= n <= self.train_size]
        if bad:
            raise ValueError(f"sizes {bad} must lie in [1, train_size={self.train_size}]")
        bad = [f for f in self.mixture if not 0 <= f <= 1]
        if bad:
            raise ValueError(f"mixture fractions {bad} must lie in [0, 1]")
        if "distribution" in self.hypotheses and len(set(self.mixture)) < 2:
            raise ValueError(f"mixture needs at least 2 fractions, got {self.mixture}")
        off = [b.name() for b in self.baselines if b.distribution != "narrow"]
        if off:
            raise ValueError(f"the study's baseline is supervised models on narrow data; got {off}")
        too_big = [b.train_size for b in [*self.baselines, self.reference] if b.train_size > self.train_size]
        if too_big:
            raise ValueError(f"baseline/reference sizes {too_big} exceed train_size={self.train_size}")
        if self.data_root is not None and self.class_names is None:
            raise ValueError("data_root needs class_names (a text file with one class name per line)")
        if not self.shifts or ID_DATASET in self.shifts:
            raise ValueError(f"shifts must name at least one shift set other than {ID_DATASET!r}, got {self.shifts}")
        if self.data_root is None and sorted(set(self.shifts) - set(SHIFTS)):
            raise ValueError(f"the embedded world has the shifts {list(SHIFTS)}; got {self.shifts}")
        return self


QUICK = dict(
    architecture="clipshift-tiny-bow", train_size=600, eval_size=200, adversarial_size=80, workers=2,
    sizes=[300, 600], mixture=[0.0, 0.5, 1.0],
    supervised=dict(epochs=4, batch_size=64), contrastive=dict(epochs=3, batch_size=64),
    simclr=dict(epochs=2, batch_size=64), simclr_finetune=dict(epochs=2, batch_size=64),
    baselines=[dict(train_size=150, epochs=3), dict(train_size=300, epochs=4), dict(train_size=600, epochs=4)],
    reference=dict(train_size=300, epochs=3), bootstrap=200,
)


def _merge(base: dict, update: dict) -> dict:
    """`base` updated by `update`, nested mappings merged key by key."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_study_config(path=None, overrides: dict | None = None, quick: bool = False) -> StudyConfig:
    """Defaults ← the YAML file ← the quick preset (``quick``) ← `overrides`; validated."""
    values = read_yaml_mapping(path) if path is not None else {}
    if quick:
        values = _merge(values, QUICK)
    values = _merge(values, overrides or {})
    return load_config("default", None, values, cls=StudyConfig, presets={"default": {}})


# ---------------------------------------------------------------- the plan


def _name_f(fraction: float) -> str:
    return f"{round(100 * fraction):03d}"


def study_plan(config: StudyConfig) -> list[dict]:
    """Every model to train, in order (a SimCLR pre-training precedes its fine-tune), deduplicated
    across hypotheses; each with the metadata that goes into results.csv."""
    n, configs = config.train_size, {}

    def clip(fraction: float, size: int) -> str:
        label = {0.0: "CLIP narrow", 1.0: "CLIP diverse"}.get(fraction, f"CLIP {100 * fraction:g}% diverse")
        key = f"clip_f{_name_f(fraction)}_n{size}"
        configs[key] = dict(objective="contrastive", diverse_fraction=fraction, labels="captions", train_size=size,
                            label=f"{label} (n={size})", heads=configs.get(key, {}).get("heads", ["ensemble"]))
        return key

    def supervised(distribution: str, labels: str) -> str:
        key = f"sup_{distribution}_{'true' if labels == 'true' else 'tm'}_n{n}"
        text = "true labels" if labels == "true" else "text-matched labels"
        configs[key] = dict(objective="supervised", diverse_fraction=float(distribution == "diverse"), labels=labels,
                            train_size=n, label=f"supervised {distribution}, {text} (n={n})", heads=["head"])
        return key

    wanted = set(config.hypotheses)
    if "size" in wanted:
        for size in sorted(set(config.sizes)):
            clip(1.0, size)
    if "distribution" in wanted:
        for fraction in sorted(set(config.mixture)):
            clip(float(fraction), n)
    if "language_train" in wanted:
        clip(0.0, n), clip(1.0, n), supervised("narrow", "true"), supervised("diverse", "text_match")
    if "language_test" in wanted:
        for fraction in (0.0, 1.0):
            configs[clip(fraction, n)]["heads"] = ["ensemble", "bare", "probe"]
    if "loss" in wanted:
        clip(1.0, n), supervised("diverse", "text_match")
        configs[f"simclr_pre_n{n}"] = dict(objective="simclr", diverse_fraction=1.0, labels="none", train_size=n,
                                           label=f"SimCLR pre-training on diverse (n={n})", heads=[])
        configs[f"simclr_tm_n{n}"] = dict(objective="supervised", diverse_fraction=1.0, labels="text_match",
                                          train_size=n, label=f"SimCLR + text-matched fine-tune (n={n})",
                                          heads=["head"], init_from=f"simclr_pre_n{n}")
    plan = []
    for i, run in enumerate(config.baselines):
        entry = dict(name=run.name(), config="baseline", group="baseline", label="baseline", objective="supervised",
                     diverse_fraction=float(run.distribution == "diverse"),
                     labels="true" if run.distribution == "narrow" else config.diverse_label_source,
                     train_size=run.train_size, epochs=run.epochs, seed=config.seed + 100 + i, heads=["head"])
        if not run.augment or run.architecture:  # the default settings keep the metadata of earlier runs
            entry.update(augment=run.augment, architecture=run.architecture or config.architecture)
        plan.append(entry)
    for seed in config.seeds:
        for key, entry in configs.items():
            entry = dict(entry)
            if "init_from" in entry:
                entry["init_from"] = f"{entry['init_from']}_s{seed}"
            base = _trainer(config, entry)
            plan.append(dict(name=f"{key}_s{seed}", config=key, group=entry["label"], seed=seed,
                             epochs=base.epochs, **{k: v for k, v in entry.items()}))
    return plan


def _trainer(config: StudyConfig, entry: dict) -> TrainConfig:
    if entry["objective"] == "contrastive":
        return config.contrastive
    if entry["objective"] == "simclr":
        return config.simclr
    return config.simclr_finetune if entry.get("init_from") else config.supervised


# ---------------------------------------------------------------- data, training, evaluation


def _indices(length: int, n: int, seed: int, stream: int) -> np.ndarray:
    """The first `n` of a seeded permutation: a smaller size is a subset of a larger one (same seed)."""
    if n > length:
        raise ValueError(f"asked for {n} training images, only {length} available")
    return np.sort(np.random.default_rng([seed, stream]).permutation(length)[:n])


def training_data(entry: dict, sets: dict, tokenizer) -> TrainData:
    """Images (and captions or labels) of `entry`: round(f·n) diverse and the rest narrow images."""
    n, fraction = entry["train_size"], entry["diverse_fraction"]
    n_diverse = int(round(fraction * n))
    parts = [("narrow", _indices(len(sets["narrow"]["images"]), n - n_diverse, entry["seed"], 0)),
             ("diverse", _indices(len(sets["diverse"]["images"]), n_diverse, entry["seed"], 1))]
    images = torch.cat([sets[d]["images"][torch.from_numpy(i)] for d, i in parts])
    if entry["objective"] == "contrastive":
        captions = [sets[d]["captions"][j] for d, i in parts for j in i]
        return TrainData(images, tokens=tokenizer(captions))
    if entry["objective"] == "simclr":
        return TrainData(images)
    key = "true" if entry["labels"] == "true" else "matched"
    labels = np.concatenate([sets[d][key][i] for d, i in parts])
    keep = labels >= 0  # text matching drops captions naming no class or several
    if not keep.any():
        raise ValueError(f"{entry['name']}: no training image has a label ({entry['labels']})")
    return TrainData(images[torch.from_numpy(keep)], labels=torch.from_numpy(labels[keep]).long())


def _fit(config: StudyConfig, entry: dict, sets: dict, tokenizer, class_names, run_dir: Path, progress: bool):
    """Train `entry` (or load it, when a previous run of this study finished it); return (model, trained)."""
    kind = {"contrastive": "clip", "simclr": "simclr"}.get(entry["objective"], "classifier")
    meta = {k: v for k, v in entry.items() if k != "heads"}
    directory = run_dir / "checkpoints" / entry["name"]
    architecture = entry.get("architecture", config.architecture)
    if (directory / "model.json").is_file():
        model, spec = load_checkpoint(directory)
        if spec.metadata == json.loads(json.dumps(meta)) and spec.architecture == architecture:
            return model.eval(), False
    spec = ModelSpec(kind, architecture, list(class_names), metadata=meta)
    seed = 1000 * entry["seed"] + 17 if entry["config"] != "baseline" else entry["seed"]
    model = build_model(spec, seed=seed)
    if entry.get("init_from"):
        source, _ = load_checkpoint(run_dir / "checkpoints" / entry["init_from"])
        model.visual.load_state_dict(source.visual.state_dict())
    base = asdict(_trainer(config, entry))
    train_config = TrainConfig(**{**base, "seed": seed, "epochs": entry["epochs"],
                                  "augment": entry.get("augment", base["augment"])})
    train(model, training_data(entry, sets, tokenizer), train_config, log_path=run_dir / "metrics.jsonl",
          progress=progress, desc=entry["name"])
    save_checkpoint(model, spec, directory)
    return model.eval(), True


def fit_and_evaluate(config: StudyConfig, entry: dict, sets: dict, eval_sets: dict, class_names, run_dir: Path,
                     probe_set, progress: bool) -> tuple[list[dict], bool, float]:
    """Train (or reuse) and evaluate one plan entry: (results rows, trained now?, seconds). Runs in a
    worker process of :func:`~clipshift.parallel.run_jobs` or in this one."""
    start = time.perf_counter()
    tokenizer = get_tokenizer(config.architecture)
    model, fresh = _fit(config, entry, sets, tokenizer, class_names, run_dir, progress)
    rows = evaluate(model, entry, eval_sets, tokenizer, class_names, probe_set, config.probe_weight_decay)
    return rows, fresh, time.perf_counter() - start


def evaluate(model, entry: dict, eval_sets: dict, tokenizer, class_names, probe_set=None,
             probe_weight_decay: float = 1e-4) -> list[dict]:
    """Top-1 of each of `entry`'s heads on every evaluation set: ``head`` (a classifier's own),
    ``ensemble`` / ``bare`` (zero-shot with the prompt ensemble / the bare class name) and ``probe``
    (logistic regression on the frozen image features of `probe_set` = (images, labels))."""
    heads = {}
    for head in entry["heads"]:
        if head == "ensemble":
            heads[head] = zero_shot_weights(model, tokenizer, class_names, ZERO_SHOT_TEMPLATES)
        elif head == "bare":
            heads[head] = zero_shot_weights(model, tokenizer, class_names, BARE_TEMPLATE)
        elif head == "probe":
            images, labels = probe_set
            heads[head] = fit_linear_probe(encode_images(model, images), labels, len(class_names),
                                           weight_decay=probe_weight_decay)
        else:
            heads[head] = None
    meta = {k: v for k, v in entry.items() if k not in ("name", "heads", "init_from")}
    rows = []
    for dataset, (images, labels) in eval_sets.items():
        features = encode_images(model, images)
        for head, weights in heads.items():
            if head == "head":
                logits = head_logits(model, features)
            elif head == "probe":
                logits = probe_logits(features, *weights)
            else:
                logits = zero_shot_logits(features, weights)
            rows.append(dict(model=entry["name"] + HEADS[head], dataset=dataset, metric="top1",
                             value=top1_accuracy(logits, labels), num_examples=len(labels),
                             **{**meta, "config": entry["config"] + HEADS[head], "head": head,
                                "group": entry["group"] + HEAD_LABELS[head]}))
    return rows


# ---------------------------------------------------------------- summaries and verdicts


def summarize(er: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """One row per configuration (and head) on the average over shifts: means over seeds of the ID
    accuracy, the shift accuracy and ER, with a t-interval over seeds (with one seed: the model's
    own bootstrap interval)."""
    avg = er[(er["dataset"] == AVERAGE) & ~er["is_baseline"].astype(bool)]
    rows = []
    for key, part in avg.groupby("config", sort=False):
        values = part["effective_robustness"].to_numpy(float)
        mean, n = float(values.mean()), len(values)
        if n > 1:
            half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
            low, high, kind = mean - half, mean + half, f"t over {n} seeds"
        else:
            low, high, kind = float(part["ci_low"].iloc[0]), float(part["ci_high"].iloc[0]), "bootstrap (1 seed)"
        first = part.iloc[0]
        rows.append(dict(config=key, label=first["group"], objective=first["objective"], head=first["head"],
                         diverse_fraction=float(first["diverse_fraction"]), labels=first["labels"],
                         train_size=int(first["train_size"]), seeds=n,
                         id_accuracy=float(part["id_accuracy"].mean()),
                         shift_accuracy=float(part["shift_accuracy"].mean()),
                         effective_robustness=mean, er_sd=float(values.std(ddof=1)) if n > 1 else float("nan"),
                         ci_low=low, ci_high=high, interval=kind))
    return pd.DataFrame(rows)


def _interval(row) -> str:
    return f"[{_pp(row['ci_low'])}, {_pp(row['ci_high'])}]"


def overlap(a, b) -> bool:
    return bool(a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"])


def compare(a, b) -> tuple[bool, str]:
    """(effect detected, a sentence) for ER of configuration `a` against `b`."""
    diff = a["effective_robustness"] - b["effective_robustness"]
    head = (f"{a['label']} {_pp(a['effective_robustness'])} {_interval(a)} vs {b['label']} "
            f"{_pp(b['effective_robustness'])} {_interval(b)}")
    if overlap(a, b):
        return False, f"{head}: intervals overlap, no effect detected (difference {_pp(diff)})."
    return True, f"{head}: intervals do not overlap, {'higher' if diff > 0 else 'lower'} ER by {_pp(abs(diff))}."


def _rows(summary: pd.DataFrame, keys: list[str]) -> list:
    index = summary.set_index("config")
    return [index.loc[k].to_dict() | {"config": k} for k in keys if k in index.index]


def hypothesis_rows(hypothesis: str, config: StudyConfig, summary: pd.DataFrame) -> list[dict]:
    """The configurations a hypothesis compares, in display order."""
    n = config.train_size
    keys = {
        "size": [f"clip_f100_n{s}" for s in sorted(set(config.sizes))],
        "distribution": [f"clip_f{_name_f(f)}_n{n}" for f in sorted(set(config.mixture))],
        "language_train": [f"clip_f000_n{n}", f"sup_narrow_true_n{n}", f"clip_f100_n{n}", f"sup_diverse_tm_n{n}"],
        "language_test": [f"clip_f100_n{n}", f"clip_f100_n{n}_bare", f"clip_f100_n{n}_probe",
                          f"clip_f000_n{n}", f"clip_f000_n{n}_bare", f"clip_f000_n{n}_probe"],
        "loss": [f"simclr_tm_n{n}", f"clip_f100_n{n}", f"sup_diverse_tm_n{n}"],
    }[hypothesis]
    return _rows(summary, keys)


def verdict(hypothesis: str, rows: list[dict]) -> tuple[str, list[str]]:
    """(one-line verdict, supporting sentences), computed from the configuration rows."""
    by = {r["config"]: r for r in rows}
    if hypothesis == "size":
        small, large = rows[0], rows[-1]
        moved = large["id_accuracy"] - small["id_accuracy"]
        effect, sentence = compare(large, small)
        trend = stats.spearmanr([r["train_size"] for r in rows], [r["effective_robustness"] for r in rows])[0] \
            if len(rows) > 2 else float("nan")
        line = (f"From n={small['train_size']} to n={large['train_size']} ID accuracy moves {_pp(moved)} while ER "
                f"moves {_pp(large['effective_robustness'] - small['effective_robustness'])}: "
                + ("the intervals do not overlap, so training-set size changes effective robustness."
                   if effect else "the intervals overlap: size moves the model along the baseline, "
                                  "no effect on effective robustness detected."))
        details = [sentence] + ([f"Rank correlation of ER with size: ρ = {trend:+.2f}."] if np.isfinite(trend) else [])
        return line, details
    if hypothesis == "distribution":
        low, high = rows[0], rows[-1]
        effect, sentence = compare(high, low)
        rho = stats.spearmanr([r["diverse_fraction"] for r in rows], [r["effective_robustness"] for r in rows])[0] \
            if len(rows) > 2 else float("nan")
        line = (f"Diverse fraction {high['diverse_fraction']:g} vs {low['diverse_fraction']:g}: ER "
                f"{_pp(high['effective_robustness'])} vs {_pp(low['effective_robustness'])}; "
                + ("intervals do not overlap: the training distribution changes effective robustness"
                   if effect else "intervals overlap: no effect of the training distribution detected")
                + (f" (rank correlation with the diverse fraction ρ = {rho:+.2f})." if np.isfinite(rho) else "."))
        return line, [sentence]
    if hypothesis == "language_train":
        pairs = [(a, b) for a, b in ((rows[0], rows[1]), (rows[2], rows[3])) if a and b] if len(rows) == 4 else []
        results = [compare(a, b) for a, b in pairs]
        found = [r for r, _ in results]
        names = ["narrow data with true labels", "diverse data with text-matched labels"]
        if not any(found):
            line = ("Captions vs labels on the same images: intervals overlap on "
                    + " and on ".join(names[: len(found)])
                    + ": no effect of language supervision at training time detected.")
        else:
            where = [f"{n} (captions {'higher' if a['effective_robustness'] > b['effective_robustness'] else 'lower'})"
                     for n, f, (a, b) in zip(names, found, pairs) if f]
            line = f"Captions vs labels on the same images: an effect is detected on {' and '.join(where)}."
        return line, [s for _, s in results]
    if hypothesis == "language_test":
        details, effects = [], []
        for base in [r for r in rows if r["head"] == "ensemble"]:
            for other in ("_bare", "_probe"):
                if base["config"] + other in by:
                    effect, sentence = compare(by[base["config"] + other], base)
                    details.append(sentence)
                    effects.append((other, effect, by[base["config"] + other]["effective_robustness"]
                                    - base["effective_robustness"]))
        bare = [e for o, e, _ in effects if o == "_bare"]
        probe = [(e, d) for o, e, d in effects if o == "_probe"]
        direction = "falls" if probe and np.mean([d for _, d in probe]) < 0 else "rises"
        line = ("Bare class name vs the prompt ensemble: "
                + ("an effect is detected" if any(bare) else "no effect detected")
                + "; linear probe on the frozen features vs zero-shot: "
                + (f"ER {direction} (intervals do not overlap)" if any(e for e, _ in probe) else "no effect detected")
                + ".")
        return line, details
    simclr, clip_row, sup = (rows + [None, None, None])[:3]
    details = [compare(simclr, clip_row)[1], compare(simclr, sup)[1]] if simclr and clip_row and sup else []
    if simclr and clip_row:
        effect, _ = compare(simclr, clip_row)
        diff = simclr["effective_robustness"] - clip_row["effective_robustness"]
        line = ("SimCLR + text-matched labels vs CLIP on the same diverse data: "
                + (f"ER differs by {_pp(diff)} (intervals do not overlap): the loss matters here." if effect
                   else "intervals overlap, no effect of the contrastive image–text loss detected."))
    else:
        line = "Not enough configurations to compare."
    return line, details


def supporting(hypothesis: str, config: StudyConfig, summary: pd.DataFrame, details: list[str]) -> str:
    """For the distribution hypothesis, the same question asked of the supervised models trained in
    H3 (narrow, true labels vs diverse, text-matched labels): appended to `details`, summarised in
    the returned suffix of the verdict line ('' when they were not trained)."""
    if hypothesis != "distribution":
        return ""
    rows = _rows(summary, [f"sup_diverse_tm_n{config.train_size}", f"sup_narrow_true_n{config.train_size}"])
    if len(rows) < 2:
        return ""
    effect, sentence = compare(*rows)
    details.append("Supervised models: " + sentence)
    return (f" Supervised models: diverse vs narrow data {_pp(rows[0]['effective_robustness'])} vs "
            f"{_pp(rows[1]['effective_robustness'])}, intervals {'do not overlap' if effect else 'overlap'}.")


def cautions(rows: list[dict], class_names) -> list[str]:
    """Sentences flagging configurations whose ID accuracy is under twice chance: their ER says
    little, since every model near chance sits near the baseline's low end."""
    chance = 1 / len(class_names)
    weak = [r for r in rows if r["id_accuracy"] < 2 * chance]
    return [f"Caution: {r['label']} is near chance in distribution ({_pct(r['id_accuracy'])}; chance "
            f"{_pct(chance)}), so its ER is weak evidence either way." for r in weak]


# ---------------------------------------------------------------- figures


def plot_hypothesis(hypothesis: str, rows: list[dict], er: pd.DataFrame, fits: pd.DataFrame, path: Path) -> Path:
    """Left: average-shift vs ID accuracy (logit axes) with the baseline models and fit, each seed's
    model small and each configuration's mean large (joined along a sweep). Right: ER per
    configuration with its interval over seeds and the seeds as dots."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..robustness.plots import BASELINE_COLOUR, COLOURS, _fit_curve, _set_axes, save_png_atomic
    from ..robustness.transforms import get_transform

    t = get_transform("logit")
    avg = er[er["dataset"] == AVERAGE]
    keys = [r["config"] for r in rows]
    mine = avg[avg["config"].isin(keys)]
    base = avg[avg["is_baseline"].astype(bool)]
    shown = pd.concat([base, mine])
    x, y = t.forward(shown["id_accuracy"]), t.forward(shown["shift_accuracy"])
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    pad = 0.08 * (hi - lo) + 0.15
    lo, hi = lo - pad, hi + pad
    fig = Figure(figsize=(12, 5.2))
    FigureCanvasAgg(fig)
    ax, bx = fig.subplots(1, 2, gridspec_kw=dict(width_ratios=[1, 1.15]))
    grid = np.linspace(lo, hi, 200)
    fit = fits.set_index("dataset").loc[AVERAGE]
    line, band = _fit_curve(fit, avg, grid, t)
    ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="y = x")
    ax.fill_between(grid, band[0], band[1], color="black", alpha=0.12, lw=0, label="95% bootstrap band")
    ax.plot(grid, line, color="black", lw=1.5, label=f"baseline fit (R² {fit['r2']:.2f})")
    ax.scatter(t.forward(base["id_accuracy"]), t.forward(base["shift_accuracy"]), color=BASELINE_COLOUR, s=28,
               lw=0, label=f"baseline models ({len(base)})", zorder=3)
    ordered = hypothesis in ("size", "distribution")
    colours = {k: COLOURS[i % len(COLOURS)] for i, k in enumerate(keys)}
    means = []
    for row in rows:
        part = mine[mine["config"] == row["config"]]
        c = colours[row["config"]]
        ax.scatter(t.forward(part["id_accuracy"]), t.forward(part["shift_accuracy"]), color=c, s=14, alpha=0.45, lw=0,
                   zorder=4)
        mx, my = float(t.forward(row["id_accuracy"])), float(t.forward(row["shift_accuracy"]))
        ax.scatter([mx], [my], color=c, s=70, edgecolor="white", lw=0.8, zorder=5, label=_short(hypothesis, row))
        means.append((mx, my))
    if ordered and len(means) > 1:
        ax.plot(*zip(*means), color="dimgrey", lw=1, zorder=4.5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _set_axes(ax, lo, hi, t, AVERAGE, ID_DATASET, "Average over shifts vs in-distribution accuracy")
    ax.legend(fontsize=7, loc="upper left")

    positions = _positions(hypothesis, rows)
    for pos, row in zip(positions, rows):
        c = colours[row["config"]]
        part = mine[mine["config"] == row["config"]]
        er_pp = 100 * row["effective_robustness"]
        bx.errorbar([pos], [er_pp], yerr=[[er_pp - 100 * row["ci_low"]], [100 * row["ci_high"] - er_pp]], fmt="o",
                    color=c, ms=8, capsize=4, lw=1.5, zorder=4)
        jitter = np.linspace(-0.06, 0.06, len(part)) * (np.ptp(positions) or 1) if len(part) > 1 else [0.0]
        bx.scatter(pos + np.asarray(jitter), 100 * part["effective_robustness"], color=c, s=14, alpha=0.5, lw=0,
                   zorder=3)
    if ordered and len(rows) > 1:
        bx.plot(positions, [100 * r["effective_robustness"] for r in rows], color="dimgrey", lw=1, zorder=2)
    bx.axhline(0, color="black", lw=1)
    bx.set_ylabel("effective robustness, average over shifts (pp)")
    bx.grid(alpha=0.25)
    if hypothesis == "size":
        bx.set_xscale("log")
        bx.set_xticks(positions, [f"{r['train_size']}" for r in rows])
        bx.minorticks_off()
        bx.set_xlabel("training-set size (images, log scale)")
    elif hypothesis == "distribution":
        bx.set_xticks(positions, [f"{100 * r['diverse_fraction']:g}%" for r in rows])
        bx.set_xlabel("fraction of diverse data in the training set")
    else:
        bx.set_xticks(positions, [_short(hypothesis, r).replace(" · ", "\n") for r in rows], fontsize=8)
        bx.set_xlim(-0.6, len(rows) - 0.4)
    bx.set_title("ER: mean and 95% interval over seeds (dots: single seeds)")
    fig.suptitle(TITLES[hypothesis], fontsize=13, fontweight="bold")
    fig.tight_layout()
    return save_png_atomic(fig, path)


def _short(hypothesis: str, row: dict) -> str:
    if hypothesis == "size":
        return f"n = {row['train_size']}"
    if hypothesis == "distribution":
        return f"{100 * row['diverse_fraction']:g}% diverse"
    return str(row["label"]).replace(f" (n={row['train_size']})", "")


def _positions(hypothesis: str, rows: list[dict]) -> list[float]:
    if hypothesis == "size":
        return [float(r["train_size"]) for r in rows]
    if hypothesis == "distribution":
        return [float(r["diverse_fraction"]) for r in rows]
    return [float(i) for i in range(len(rows))]


# ---------------------------------------------------------------- the run


def _check_resume(run_dir: Path, text: str) -> None:
    path = run_dir / "config.yaml"
    if path.is_file() and path.read_text() != text:
        old, new = yaml.safe_load(path.read_text()) or {}, yaml.safe_load(text)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"{run_dir} holds a study with another configuration (differs in {changed}); "
                         "choose another --out or remove that folder")


def _data(config: StudyConfig, run_dir: Path, log: Log, progress: bool, tokenizer):
    """(class names, training sets, evaluation sets, facts) from the world (generated once per run
    folder) or from `data_root`."""
    facts = {}
    if config.data_root is not None:
        root = Path(config.data_root)
        names_file = Path(config.class_names)
        if not names_file.is_file():
            raise FileNotFoundError(f"class_names file not found: {names_file}")
        class_names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
        synonyms = None
    else:
        root, class_names, synonyms = run_dir / "world", list(CLASS_NAMES), SYNONYMS
        if not (root / WORLD_MARKER).is_file():
            t = time.perf_counter()
            facts["world"] = build_world(config, root, progress)
            log.step(f"world: {facts['world']['images_generated']} images generated and exported",
                     time.perf_counter() - t)
    for name in ("train_narrow.csv", "train_diverse.csv", ID_DATASET):
        if not (root / name).exists():
            raise FileNotFoundError(f"{root}: no {name} (expected the layout of an exported world)")
    t = time.perf_counter()
    sets = {d: load_training_set(root, d, progress, class_names, synonyms) for d in ("narrow", "diverse")}
    for d, data in sets.items():
        if len(data["images"]) < config.train_size:
            raise ValueError(f"train_{d}.csv has {len(data['images'])} images; train_size is {config.train_size}")
    if (sets["narrow"]["true"] < 0).all():
        raise ValueError("train_narrow.csv needs a label column: the baseline and the supervised models use it")
    shifts = [s for s in config.shifts if s != "adversarial" or config.data_root is not None]
    eval_sets = {d: load_eval_set(root, d, progress, class_names) for d in [ID_DATASET, *shifts]}
    log.step("data loaded back through the CSV and ImageFolder loaders; captions text-matched", time.perf_counter() - t)
    if config.data_root is None and "adversarial" in config.shifts:
        eval_sets["adversarial"], facts["adversarial"] = _adversarial(config, root, sets, tokenizer, run_dir, log,
                                                                      progress)
    facts["text_match"] = {d: {k: v for k, v in sets[d]["match"].items() if k != "per_class_precision"}
                           for d in sets}
    return class_names, sets, eval_sets, facts


def _adversarial(config, root: Path, sets, tokenizer, run_dir: Path, log: Log, progress: bool):
    """The world's adversarial set, filtered once per run folder against a reference model."""
    from ..world.adversarial import filter_adversarial
    from ..world.export import export_imagefolder
    from .quickstart import _as_tensor

    marker = root / WORLD_MARKER
    if marker.is_file():
        summary = json.loads(marker.read_text())["adversarial"]
    else:
        t = time.perf_counter()
        ref = dict(name="reference", config="reference", group="reference", label="reference",
                   objective="supervised", diverse_fraction=0.0, labels="true",
                   train_size=config.reference.train_size, epochs=config.reference.epochs,
                   seed=config.seed + 999, heads=["head"])
        model, _ = _fit(config, ref, sets, tokenizer, CLASS_NAMES, run_dir, progress)
        predict = lambda x: head_logits(model, encode_images(model, _as_tensor(x))).argmax(1).numpy()  # noqa: E731
        adversarial, summary = filter_adversarial(predict, config.adversarial_size, seed=config.seed,
                                                  size=config.image_size, progress=progress)
        export_imagefolder(adversarial, root)
        atomic_write_text(marker, json.dumps({"adversarial": summary}, indent=2, default=float))
        log.step(f"adversarial set: kept {summary['kept']} of {summary['pool_drawn']} pool images that the "
                 "reference model gets wrong", time.perf_counter() - t)
    return load_eval_set(root, "adversarial", progress), summary


def run_study(config: StudyConfig, out, *, progress: bool = True, quiet: bool = False) -> Path:
    """Run (or resume) the study into the folder `out`; return the path of its report.md."""
    config.validate()
    run_dir = Path(out)
    text = yaml.safe_dump(asdict(config), sort_keys=False)
    _check_resume(run_dir, text)
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", text)
    torch.manual_seed(config.seed)
    log = Log(quiet)
    tokenizer = get_tokenizer(config.architecture)
    class_names, sets, eval_sets, facts = _data(config, run_dir, log, progress, tokenizer)
    if config.data_root is None and not (run_dir / "world" / WORLD_MARKER).is_file():
        atomic_write_text(run_dir / "world" / WORLD_MARKER, json.dumps({"adversarial": facts.get("adversarial")}))
    probe_set = (sets["narrow"]["images"], torch.from_numpy(sets["narrow"]["true"]).long())
    keep = probe_set[1] >= 0
    probe_set = (probe_set[0][keep], probe_set[1][keep])

    plan = study_plan(config)
    previous = run_dir / "facts.json"
    # seconds each model took to train, kept across resumed runs (a reused model keeps its first time)
    train_seconds = json.loads(previous.read_text()).get("train_seconds", {}) if previous.is_file() else {}
    done, trained = {}, 0
    jobs = min(resolve_jobs(config.jobs), len(plan))
    # a fine-tune starts from its pre-training's checkpoint: those wait for the first wave
    for wave in ([e for e in plan if not e.get("init_from")], [e for e in plan if e.get("init_from")]):
        tasks = [(config, entry, sets, eval_sets, class_names, run_dir, probe_set, progress and jobs == 1)
                 for entry in wave]
        for i, (entry_rows, fresh, seconds) in run_largest_first(fit_and_evaluate, tasks, jobs, sizes=[
                training_cost(e) for e in wave], names=[e["name"] for e in wave]):
            entry = wave[i]
            done[entry["name"]], trained = entry_rows, trained + fresh
            if fresh:
                train_seconds[entry["name"]] = round(seconds, 1)
            note = f": {ID_DATASET} {100 * entry_rows[0]['value']:.1f}%" if entry_rows else ""
            log.step(f"[{len(done)}/{len(plan)}] {'trained' if fresh else 'reused'} and evaluated "
                     f"{entry['name']}{note}", seconds)
    results = pd.DataFrame([row for entry in plan for row in done[entry["name"]]])
    atomic_write_text(run_dir / "results.csv", results.to_csv(index=False))

    t = time.perf_counter()
    shifts = [d for d in eval_sets if d != ID_DATASET]
    baseline_models = sorted(results.loc[results["config"] == "baseline", "model"].unique())
    er, fits = compute_effective_robustness(results, ID_DATASET, shifts, baseline_models=baseline_models,
                                            n_bootstrap=config.bootstrap, seed=config.seed)
    atomic_write_text(run_dir / "er.csv", er.to_csv(index=False))
    atomic_write_text(run_dir / "fits.csv", fits.to_csv(index=False))
    summary = summarize(er)
    atomic_write_text(run_dir / "summary.csv", summary.to_csv(index=False))
    sections = []
    for hypothesis in config.hypotheses:
        rows_h = hypothesis_rows(hypothesis, config, summary)
        line, details = verdict(hypothesis, rows_h)
        line, details = line + supporting(hypothesis, config, summary, details), details + cautions(rows_h, class_names)
        figure = plot_hypothesis(hypothesis, rows_h, er, fits, run_dir / "figures" / f"study_{hypothesis}.png")
        sections.append(dict(hypothesis=hypothesis, rows=rows_h, verdict=line, details=details, figure=figure))
    atomic_write_text(run_dir / "verdicts.json", json.dumps(
        [{"hypothesis": s["hypothesis"], "verdict": s["verdict"], "details": s["details"]} for s in sections],
        indent=2))
    log.step("effective robustness fitted; verdicts and figures written", time.perf_counter() - t)

    probe_md = ""
    if config.probes and config.data_root is None:
        t = time.perf_counter()
        main_models = [e["name"] for e in plan if e["objective"] != "simclr"
                       and (e["config"] == "baseline" or e["seed"] == config.seeds[0])]
        probe_md = _probe(run_dir, main_models, progress)
        log.step("representations probed on the first seed's models", time.perf_counter() - t)

    facts.update(models=len(plan), models_trained_this_run=trained, timings=log.timings, seeds=config.seeds,
                 seconds_total=round(time.perf_counter() - log.start, 1),
                 versions={"clipshift": __version__, "torch": torch.__version__,
                           "python": platform.python_version()},
                 train_seconds={e["name"]: train_seconds[e["name"]] for e in plan if e["name"] in train_seconds})
    atomic_write_text(previous, json.dumps(facts, indent=2, default=float))
    from .study_report import write_study_report

    report = write_study_report(run_dir, config, summary, fits, sections, facts, probe_md)
    if not quiet:
        print(f"report: {report}")
    return report


def _probe(run_dir: Path, models: list[str], progress: bool) -> str:
    from ..probe import probe_section

    return probe_section(run_dir, models=models, progress=progress)
