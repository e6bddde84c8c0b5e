"""Where the study's data come from: training sources per distribution, evaluation sets, the
probe's labelled images, and the embedded world (generated once per run folder, with its
adversarial set filtered against a reference model)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...io import atomic_write_text
from ...data.eval_sets import eval_set_entries, open_eval_set
from ...data.imagenet import EvalSuite
from ...evaluate import ImageTensors
from ..common.training import class_names_for
from ..common.world import WorldSpec, build_world, load_eval_set, load_training_set, predictor
from .config import DISTRIBUTIONS

WORLD_MARKER = "world.json"


@dataclass
class StudyData:
    """``distributions``: name → `clipshift train` sources; ``eval_sets``: name → ImageTensors or
    EvalSuite, in-distribution first; ``probe_set``: labelled narrow images for the H4 probe."""

    class_names: list[str]
    distributions: dict[str, list[dict]]
    eval_sets: dict[str, object]
    probe_set: object | None
    world: bool
    facts: dict = field(default_factory=dict)
    domains: dict = field(default_factory=dict)
    fingerprints: dict = field(default_factory=dict)  # what kept scores depend on (run.fingerprint_data)


def world_sources(root: Path) -> dict[str, list[dict]]:
    return {d: [{"type": "csv", "path": str((root / f"train_{d}.csv").absolute())}] for d in DISTRIBUTIONS}


def prepare(config, run_dir: Path, log, progress: bool, train_reference) -> StudyData:
    """The study's data (see :class:`StudyData`); `train_reference(entry)` trains the world's
    reference model (an EvalModel) when the adversarial set has to be made."""
    if config.data is not None:
        return _real(config)
    facts = {}
    if config.data_root is not None:
        root, class_names = Path(config.data_root), class_names_for(config.classes)
    else:
        root, class_names = run_dir / "world", class_names_for("world")
        if not (root / WORLD_MARKER).is_file():
            t = time.perf_counter()
            facts["world"] = build_world(WorldSpec.of(config), root, progress, sizes={"diverse": config.pool_size()})
            log.step(f"world: {facts['world']['images_generated']} images generated and exported",
                     time.perf_counter() - t)
    for name in ("train_narrow.csv", "train_diverse.csv", config.id_dataset):
        if not (root / name).exists():
            raise FileNotFoundError(f"{root}: no {name} (expected the layout of an exported world)")
    t = time.perf_counter()
    synonyms = None if config.data_root is not None else "world"
    sets = {d: load_training_set(root, d, progress, class_names, *(() if synonyms else (None,)))
            for d in DISTRIBUTIONS}
    for d, data in sets.items():
        if len(data["images"]) < config.train_size:
            raise ValueError(f"train_{d}.csv has {len(data['images'])} images; train_size is {config.train_size}")
    if (sets["narrow"]["true"] < 0).all():
        raise ValueError("train_narrow.csv needs a label column: the baseline and the supervised models use it")
    shifts = [s for s in config.shifts if s != "adversarial" or config.data_root is not None]
    eval_sets = {d: load_eval_set(root, d, progress, class_names) for d in [config.id_dataset, *shifts]}
    log.step("data loaded back through the CSV and ImageFolder loaders; captions text-matched", time.perf_counter() - t)
    if config.data_root is None and "adversarial" in config.shifts:
        eval_sets["adversarial"], facts["adversarial"] = _adversarial(config, root, log, progress, train_reference)
        if not (root / WORLD_MARKER).is_file():
            atomic_write_text(root / WORLD_MARKER, json.dumps({"adversarial": facts["adversarial"]}))
    facts["text_match"] = {d: {k: v for k, v in sets[d]["match"].items() if k != "per_class_precision"}
                           for d in sets}
    images, labels = sets["narrow"]["images"], torch.from_numpy(sets["narrow"]["true"]).long()
    keep = labels >= 0
    domains, facts["domains"] = world_domains(config, root, run_dir) if "exposure" in config.hypotheses else ({}, {})
    return StudyData(class_names, world_sources(root), eval_sets, ImageTensors(images[keep], labels[keep]),
                     world=True, facts=facts, domains=domains)


def world_domains(config, root: Path, run_dir: Path) -> tuple[dict, dict]:
    """H6 on world-like data: per shift, ``run_dir/exclude_<shift>.txt`` listing the training images of its
    domain (by the attributes tables: ``styles``, ``factors``; or the caption filter as given), and how
    many images of each training set that removes and leaves."""
    import pandas as pd
    from ...data.sources import excluded

    domains, counts = {}, {}
    tables = {}
    for d in DISTRIBUTIONS:
        path = root / f"train_{d}.attributes.csv"
        tables[d] = pd.read_csv(path, keep_default_na=False) if path.is_file() else None
    for shift, domain in config.domains().items():
        rows = {k: v for k, v in domain.items() if k in ("exclude_captions", "exclude_files")}
        listed = []
        for d, table in tables.items():
            if table is None:
                if set(domain) - set(rows):
                    raise ValueError(f"exposure.{shift}: styles/factors need {root}/train_{d}.attributes.csv (an "
                                     f"exported world's attributes); name the domain with exclude_captions or "
                                     f"exclude_files instead")
                continue
            drop = np.zeros(len(table), dtype=bool)
            if "styles" in domain:
                drop |= table["style"].isin(list(domain["styles"])).to_numpy()
            if domain.get("factors"):
                factors = table["factors"].astype(str)
                wanted = domain["factors"]
                drop |= (factors != "").to_numpy() if wanted is True else \
                    factors.apply(lambda f: bool(set(f.split("|")) & set(wanted))).to_numpy()
            drop |= excluded(rows, [str(root / p) for p in table["filepath"]], list(table["caption"]))
            listed += [str((root / p).absolute()) for p in table["filepath"][drop]]
            counts.setdefault(shift, {})[d] = {"removed": int(drop.sum()), "left": int((~drop).sum())}
            if d == "diverse" and (~drop).sum() < config.train_size:
                raise ValueError(f"exposure.{shift}: removing its domain leaves {int((~drop).sum())} of the "
                                 f"{len(table)} diverse images, fewer than train_size {config.train_size}; raise "
                                 f"diverse_pool")
        path = run_dir / f"exclude_{shift}.txt"
        atomic_write_text(path, f"# training images of the {shift} domain: {domain}\n" + "\n".join(listed) + "\n")
        domains[shift] = {"exclude_files": str(path.absolute())}
    return domains, counts


def _adversarial(config, root: Path, log, progress: bool, train_reference):
    """The world's adversarial set, filtered once per run folder against a reference model."""
    from ...world.adversarial import filter_adversarial
    from ...world.export import export_imagefolder
    from .plan import reference_entry

    marker = root / WORLD_MARKER
    if marker.is_file():
        summary = json.loads(marker.read_text())["adversarial"]
    else:
        t = time.perf_counter()
        model = train_reference(reference_entry(config))
        adversarial, summary = filter_adversarial(predictor(model), config.adversarial_size, seed=config.seed,
                                                  size=config.image_size, progress=progress)
        export_imagefolder(adversarial, root)
        log.step(f"adversarial set: kept {summary['kept']} of {summary['pool_drawn']} pool images that the "
                 "reference model gets wrong", time.perf_counter() - t)
    return load_eval_set(root, "adversarial", progress), summary


# --- real data -------------------------------------------------------------------------------------------------

def _real(config) -> StudyData:
    class_names = class_names_for(config.classes)
    eval_sets = {name: open_eval_suite(name, config, class_names) for name in [config.id_dataset, *config.shifts]}
    probe = probe_suite(config, class_names) if "language_test" in config.hypotheses else None
    domains = {shift: {k: (str(Path(v).expanduser().absolute()) if k == "exclude_files" else v)
                       for k, v in domain.items()}
               for shift, domain in config.domains().items()} if "exposure" in config.hypotheses else {}
    return StudyData(class_names, {d: list(config.data[d]) for d in DISTRIBUTIONS}, eval_sets, probe, world=False,
                     domains=domains)


def open_eval_suite(name: str, config, class_names: list[str]) -> EvalSuite:
    """The evaluation set `name` under ``eval_root`` by :func:`~clipshift.data.eval_sets.open_eval_set`'s
    rule: ImageNet-family names read as distributed (in the study's class subset when it is one), any
    other an ImageFolder tree over the class names."""
    classes = config.classes if config.classes not in (None, "world") else class_names
    return open_eval_set(name, config.eval_root, folder=eval_set_entries(config.eval_sets or [])
                         .get(name), classes=classes)


def probe_suite(config, class_names: list[str], seed: int = 0) -> EvalSuite:
    """Up to ``probe_images`` labelled images of the narrow distribution's first labelled source
    (ImageNet-Captions: its wnids; a CSV: its label column), for the H4 linear probe."""
    from ..common.training import labelled_samples

    samples = []
    for source in config.data["narrow"]:
        samples = labelled_samples(source, class_names)
        if samples:
            break
    if not samples:
        raise ValueError("language_test fits a linear probe on labelled narrow images: give data.narrow a source "
                         "with labels (imagenet_captions, or a csv with a label column), or drop language_test")
    keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[: config.probe_images])
    picked = [samples[i] for i in keep]
    return EvalSuite(name="probe_train", root=Path(picked[0][0]).parent, samples=picked,
                     target_classes=[(i,) for i in range(len(class_names))], target_names=list(class_names),
                     class_indices=None, num_classes=len(class_names))
