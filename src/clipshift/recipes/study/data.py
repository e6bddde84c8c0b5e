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
    facts = make_world(config, run_dir, log, progress, train_reference)
    root, class_names = world_root(config, run_dir), world_class_names(config)
    check_world_files(config, root)
    t = time.perf_counter()
    synonyms = None if config.data_root is not None else "world"
    sets = {d: load_training_set(root, d, progress, class_names, *(() if synonyms else (None,)))
            for d in DISTRIBUTIONS}
    for d, data in sets.items():
        if len(data["images"]) < config.train_size:
            raise ValueError(f"train_{d}.csv has {len(data['images'])} images; train_size is {config.train_size}")
    if (sets["narrow"]["true"] < 0).all():
        raise ValueError("train_narrow.csv needs a label column: the baseline and the supervised models use it")
    eval_sets = world_eval_sets(config, root, progress, class_names)
    log.step("data loaded back through the CSV and ImageFolder loaders; captions text-matched", time.perf_counter() - t)
    facts["text_match"] = {d: {k: v for k, v in sets[d]["match"].items() if k != "per_class_precision"}
                           for d in sets}
    domains, facts["domains"] = world_domains(config, root, run_dir) if "exposure" in config.hypotheses else ({}, {})
    return StudyData(class_names, world_sources(root), eval_sets, labelled_images(sets["narrow"]),
                     world=True, facts=facts, domains=domains)


def world_root(config, run_dir: Path) -> Path:
    """Where the world-like data are: ``data_root``, or the world generated into the run folder."""
    return Path(config.data_root) if config.data_root is not None else run_dir / "world"


def world_class_names(config) -> list[str]:
    return class_names_for(config.classes if config.data_root is not None else "world")


def generated(config) -> bool:
    """Whether the study generates its world (into ``run_dir/world``) rather than reading data on disk."""
    return config.data is None and config.data_root is None


def check_world_files(config, root: Path) -> None:
    for name in ("train_narrow.csv", "train_diverse.csv", config.id_dataset):
        if not (root / name).exists():
            raise FileNotFoundError(f"{root}: no {name} (expected the layout of an exported world)")


def make_world(config, run_dir: Path, log, progress: bool, train_reference) -> dict:
    """The generated world's set-up, each step once per run folder (``world/world.json`` says which are
    done): the world generated and exported, then its adversarial set filtered against a reference
    model trained on it. The plan's first block (``--prepare``); nothing for data on disk."""
    if not generated(config):
        return {}
    root, facts = world_root(config, run_dir), {}
    marker = root / WORLD_MARKER
    if not marker.is_file():
        t = time.perf_counter()
        facts["world"] = build_world(WorldSpec.of(config), root, progress, sizes={"diverse": config.pool_size()})
        atomic_write_text(marker, json.dumps({}))
        log.step(f"world: {facts['world']['images_generated']} images generated and exported",
                 time.perf_counter() - t)
    if "adversarial" in config.shifts:
        facts["adversarial"] = _adversarial(config, root, log, progress, train_reference)
    return facts


def world_eval_sets(config, root: Path, progress: bool, class_names: list[str]) -> dict:
    """The world-like data's evaluation sets decoded into memory, in-distribution first (a generated
    world's adversarial set last: it is made after the others)."""
    shifts = [s for s in config.shifts if s != "adversarial" or config.data_root is not None]
    eval_sets = {d: load_eval_set(root, d, progress, class_names) for d in [config.id_dataset, *shifts]}
    if generated(config) and "adversarial" in config.shifts:
        eval_sets["adversarial"] = load_eval_set(root, "adversarial", progress)
    return eval_sets


def labelled_images(narrow: dict) -> ImageTensors:
    """The narrow training images that have a label, for the H4 linear probe."""
    images, labels = narrow["images"], torch.from_numpy(narrow["true"]).long()
    keep = labels >= 0
    return ImageTensors(images[keep], labels[keep])


def domain_files(config, run_dir: Path) -> dict:
    """H6 on world-like data: per shift, the file :func:`world_domains` lists its domain's training images in."""
    return {shift: {"exclude_files": str((run_dir / f"exclude_{shift}.txt").absolute())}
            for shift in config.domains()} if "exposure" in config.hypotheses else {}


def plan_data(config, run_dir: Path) -> StudyData:
    """What ``--plan`` needs, without decoding a training image or generating anything: the sources
    and domains the runs' train.yaml name. Real data: their evaluation sets and the probe's samples
    are opened (files listed, not decoded); world-like data on disk: its files checked and the H6
    domains listed from its attribute tables."""
    if config.data is not None:
        return _real(config)
    root = world_root(config, run_dir)
    domains = domain_files(config, run_dir)
    if not generated(config):
        check_world_files(config, root)
        if domains:
            domains, _ = world_domains(config, root, run_dir)
    return StudyData(world_class_names(config), world_sources(root), {}, None, world=True, domains=domains)


def evaluation_data(config, run_dir: Path, heads: list[str], progress: bool) -> StudyData:
    """What ``--evaluate NAME`` needs for a model scored with `heads`: the evaluation sets, and the
    probe's training images only for a ``probe`` head; nothing generated, no other training image read."""
    if config.data is not None:
        class_names = class_names_for(config.classes)
        eval_sets = {name: open_eval_suite(name, config, class_names) for name in [config.id_dataset, *config.shifts]}
        probe = probe_suite(config, class_names) if "probe" in heads else None
        return StudyData(class_names, {d: list(config.data[d]) for d in DISTRIBUTIONS}, eval_sets, probe, world=False)
    root, class_names = world_root(config, run_dir), world_class_names(config)
    if generated(config) and (not (root / WORLD_MARKER).is_file() or
                              ("adversarial" in config.shifts and "adversarial" not in _done(root))):
        raise FileNotFoundError(f"{root / WORLD_MARKER}: the world is not prepared; run the plan's first line "
                                f"(clipshift study CONFIG --out DIR --prepare) first")
    check_world_files(config, root)
    probe = None
    if "probe" in heads:
        synonyms = () if config.data_root is None else (None,)
        probe = labelled_images(load_training_set(root, "narrow", progress, class_names, *synonyms))
    return StudyData(class_names, world_sources(root), world_eval_sets(config, root, progress, class_names), probe,
                     world=True)


def decode_rate(config, distributions: dict[str, list[dict]], seconds: float = 2.0):
    """How fast this machine decodes the first file-backed training source's files at the study's image
    size (:func:`~clipshift.data.lazy.measure_decode_rate` on its first 64 files, about `seconds`): training
    from files runs at most at that rate. None when no such source's files are on disk yet."""
    from ...data.lazy import measure_decode_rate
    from ...data.sources import class_space, file_rows, source_type

    for source in [s for sources in distributions.values() for s in sources if source_type(s).file_backed]:
        try:
            paths = file_rows(source, class_space(config.classes or "world"))[0]
        except (ValueError, FileNotFoundError):
            return None
        return measure_decode_rate(paths, config.image_size, max_images=64, seconds=seconds) if paths else None
    return None


def _done(root: Path) -> dict:
    marker = root / WORLD_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


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


def _adversarial(config, root: Path, log, progress: bool, train_reference) -> dict:
    """The world's adversarial set, filtered once per run folder against a reference model; its summary."""
    from ...world.adversarial import filter_adversarial
    from ...world.export import export_imagefolder
    from .plan import reference_entry

    done = _done(root)
    if "adversarial" not in done:
        t = time.perf_counter()
        model = train_reference(reference_entry(config))
        adversarial, done["adversarial"] = filter_adversarial(predictor(model), config.adversarial_size,
                                                              seed=config.seed, size=config.image_size,
                                                              progress=progress)
        export_imagefolder(adversarial, root)
        atomic_write_text(root / WORLD_MARKER, json.dumps(done))
        log.step(f"adversarial set: kept {done['adversarial']['kept']} of {done['adversarial']['pool_drawn']} pool "
                 "images that the reference model gets wrong", time.perf_counter() - t)
    return done["adversarial"]


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
