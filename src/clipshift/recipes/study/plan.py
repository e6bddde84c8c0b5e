"""The study's plan: every model to train, as a ``clipshift train`` run in its own folder.

:func:`study_plan` lists the models (baselines, then each configuration × seed, deduplicated across
hypotheses; a SimCLR pre-training precedes its fine-tune). :func:`train_run` turns one into the
settings of a ``clipshift train`` run (``runs/<name>/train.yaml``): the training distributions'
sources with this model's subset (``size``, ``subset_seed``: nested across sizes), its labels
(the source's, or text-matched captions), objective and trainer. :mod:`.schedule` writes the
shell commands that train and evaluate every model, for a scheduler.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ...data.sources import source_type
from ...train.loop import TrainConfig
from .hypotheses import REGISTRY
from .keys import clip_key, simclr_key, supervised_key

STREAMS = {"narrow": 0, "diverse": 1}


class PlanBuilder:
    """Collects configurations (key → settings) as the hypotheses ask for them, deduplicated."""

    def __init__(self, config):
        self.config, self.configs = config, {}

    def clip(self, fraction: float, size: int, heads=None, epochs: int | None = None,
             without: str | None = None) -> str:
        """CLIP on `fraction` diverse data, `size` images (`epochs`: other than the trainer's; `without`: a
        shift whose domain is removed from the training data)."""
        label = {0.0: "CLIP narrow", 1.0: "CLIP diverse"}.get(fraction, f"CLIP {100 * fraction:g}% diverse")
        key = clip_key(fraction, size, without)
        kept = self.configs.get(key, {})
        entry = dict(objective="contrastive", diverse_fraction=fraction, labels="captions", train_size=size,
                     label=f"{label}{f' without {without} domain' if without else ''} (n={size})",
                     heads=list(heads) if heads is not None else kept.get("heads", ["ensemble"]))
        epochs = epochs if epochs is not None else kept.get("epochs")
        self.configs[key] = entry | ({"epochs": epochs} if epochs is not None else {}) | \
            ({"without": without} if without else {})
        return key

    def supervised(self, distribution: str, labels: str) -> str:
        n = self.config.train_size
        key = supervised_key(distribution, labels, n)
        text = "true labels" if labels == "true" else "text-matched labels"
        self.configs[key] = dict(objective="supervised", diverse_fraction=float(distribution == "diverse"),
                                 labels=labels, train_size=n, label=f"supervised {distribution}, {text} (n={n})",
                                 heads=["head"])
        return key

    def simclr_finetune(self) -> str:
        n = self.config.train_size
        self.configs[f"simclr_pre_n{n}"] = dict(objective="simclr", diverse_fraction=1.0, labels="none", train_size=n,
                                                label=f"SimCLR pre-training on diverse (n={n})", heads=[])
        self.configs[simclr_key(n)] = dict(objective="supervised", diverse_fraction=1.0, labels="text_match",
                                           train_size=n, label=f"SimCLR + text-matched fine-tune (n={n})",
                                           heads=["head"], init_from=f"simclr_pre_n{n}")
        return simclr_key(n)


def trainer(config, entry: dict) -> TrainConfig:
    """The trainer settings of a plan entry's objective."""
    if entry["objective"] == "contrastive":
        return config.contrastive
    if entry["objective"] == "simclr":
        return config.simclr
    return config.simclr_finetune if entry.get("init_from") else config.supervised


def baseline_entries(config) -> list[dict]:
    plan = []
    for i, run in enumerate(config.baselines):
        entry = dict(name=run.name(), config="baseline", group="baseline", label="baseline", objective="supervised",
                     diverse_fraction=float(run.distribution == "diverse"),
                     labels="true" if run.distribution == "narrow" else config.diverse_label_source,
                     train_size=run.train_size, epochs=run.epochs, seed=config.seed + 100 + i, heads=["head"])
        if not run.augment or run.architecture:  # the default settings keep the metadata of earlier runs
            entry.update(augment=run.augment, architecture=run.architecture or config.architecture)
        plan.append(entry)
    return plan


def study_plan(config) -> list[dict]:
    """Every model to train, in order, each with the metadata that goes into results.csv."""
    builder = PlanBuilder(config)
    for name, hypothesis in REGISTRY.items():
        if name in config.hypotheses:
            hypothesis.plan(builder, config)
    plan = baseline_entries(config)
    for seed in config.seeds:
        for key, entry in builder.configs.items():
            entry = dict(entry)
            if "init_from" in entry:
                entry["init_from"] = f"{entry['init_from']}_s{seed}"
            entry.setdefault("epochs", trainer(config, entry).epochs)
            plan.append(dict(name=f"{key}_s{seed}", config=key, group=entry["label"], seed=seed, **entry))
    return plan


def reference_entry(config) -> dict:
    """The supervised model the world's adversarial set is filtered against."""
    return dict(name="reference", config="reference", group="reference", label="reference", objective="supervised",
                diverse_fraction=0.0, labels="true", train_size=config.reference.train_size,
                epochs=config.reference.epochs, seed=config.seed + 999, heads=["head"])


def model_seed(entry: dict) -> int:
    """Initialisation and data-order seed: a baseline's own; 1000·seed + 17 for a configuration (and the
    world's reference model)."""
    return entry["seed"] if entry["config"] == "baseline" else 1000 * entry["seed"] + 17


def _sources(entry: dict, distributions: dict[str, list[dict]],
             domains: dict | None = None) -> tuple[list[dict], int | None]:
    """The training sources of `entry`: round(f·n) images of `diverse` and the rest of `narrow`, each
    source's subset seeded by (seed, distribution), so a smaller size is a subset of a larger one (a
    file-backed source: the first images of a seeded permutation; a stream: its first samples in a
    seeded shard order). With a stream among them the run states ``samples`` = n, which the
    sources share by weight = size. An entry `without` a shift's domain gets that domain's filter
    (``domains[shift]``: exclude_files or exclude_captions) on every source, before the subset."""
    without = entry.get("without")
    if without and (domains is None or without not in domains):
        raise ValueError(f"{entry['name']}: no domain is named for the shift {without!r} (exposure)")
    drop = domains[without] if without else {}
    n = entry["train_size"]
    n_diverse = int(round(entry["diverse_fraction"] * n))
    counts = {"narrow": n - n_diverse, "diverse": n_diverse}
    out, streamed = [], False
    for distribution, count in counts.items():
        sources = distributions[distribution]
        if count == 0:
            continue
        weights = [float(s.get("weight", 1.0)) for s in sources]
        shares = [int(round(count * w / sum(weights))) for w in weights]
        shares[-1] = count - sum(shares[:-1])
        for j, (source, share) in enumerate(zip(sources, shares)):
            if share <= 0:
                continue
            streamed = streamed or source_type(source).streams
            seed = [entry["seed"], STREAMS[distribution]] + ([j] if j else [])
            out.append({**source, **drop, "size": share, "subset_seed": seed, "weight": share})
    return out, n if streamed else None


def train_run(config, entry: dict, runs_dir: Path, distributions: dict[str, list[dict]],
              domains: dict | None = None) -> dict:
    """The settings of the ``clipshift train`` run that trains `entry` (see the module doc)."""
    base = asdict(trainer(config, entry))
    seed = model_seed(entry)
    train = {**base, "seed": seed, "epochs": entry["epochs"], "augment": entry.get("augment", base["augment"])}
    train.pop("objective")
    objective = "finetune" if entry.get("init_from") else entry["objective"]
    sources, samples = _sources(entry, distributions, domains)
    run = dict(out=str(runs_dir / entry["name"]), architecture=entry.get("architecture", config.architecture),
               objective=objective, classes=config.classes or "world",
               labels="source" if entry["labels"] == "true" else "text_match", image_size=config.image_size,
               samples=samples, seed=seed, sources=sources, train=train)
    if entry.get("init_from"):
        run["init_from"] = str(runs_dir / entry["init_from"] / "model")
    return run
