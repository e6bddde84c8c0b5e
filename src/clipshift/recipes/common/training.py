"""``clipshift train CONFIG.yaml [key=value ...]``: one model, one objective, data from weighted sources.

A configuration (YAML; every key optional)::

    out: runs/train
    architecture: clipshift-small        # an open_clip config; the same image tower for every objective
    objective: contrastive               # contrastive | supervised | simclr | finetune
    init_from: null                      # checkpoint folder whose image tower starts this run (finetune after simclr)
    classes: world                       # world | imagenet | a text file of class names | a text file of
                                         # ImageNet wnids (a class subset, e.g. ImageNet-100)
    labels: text_match                   # text_match (from captions) | source (the sources' own labels)
    synonyms: null                       # synonyms file for text matching (default: the world's synonyms;
                                         # for imagenet or a wnid file, the WordNet lemmas of each class)
    image_size: 32
    samples: null                        # images per epoch drawn from the mixture (default: all of them;
                                         # required with a webdataset source without size)
    in_memory: auto                      # auto | true | false: decode file-backed images once into memory,
                                         # or per batch (auto: in memory up to 20000 images)
    decode_threads: auto                 # threads decoding image files per process (auto: the cores / processes)
    prefetch: 2                          # batches decoded ahead while a step trains (0: decoded when taken)
    seed: 0
    sources:                             # weighted mixture; weights are renormalised
      - {type: world, distribution: narrow, size: 4000, weight: 0.7}
      - {type: world, distribution: diverse, pool: 8000, size: 2000, subset_seed: [0, 1], weight: 0.3}
      - {type: csv, path: data/train.tsv, filepath_column: filepath, caption_column: title, label_column: null,
         size: 10000, subset_seed: 0}
      - {type: imagenet_captions, json: imagenet_captions.json, root: /data/imagenet/train,
         fields: [title, description, tags]}
      - {type: webdataset, urls: "shards/{00000..00127}.tar", weight: 1, buffer: 1000,   # streamed
         size: 100000, subset_seed: 0, exclude_captions: null}   # a take: its first samples
    train: {epochs: 10, batch_size: 256, lr: 0.002, checkpoint_every: 200, ...}   # TrainConfig

Sources: ``csv`` (a table of ``filepath`` and caption, optionally a label column of class indices,
class names or wnids), ``imagenet_captions`` (the JSON list joined to ``root/<wnid>/<filename>``;
labels from the wnid when classes are ImageNet's), ``world`` (generated), ``webdataset`` (streamed).

Subsets of a source (``csv``, ``imagenet_captions``, ``world``):

- ``size: N`` keeps N samples; ``subset_seed`` (an int or a list of ints, default 0) chooses them:
  the kept rows are ``np.sort(np.random.default_rng(subset_seed).permutation(L)[:N])``, L the
  source's samples after the class filter, so a smaller size with the same ``subset_seed`` is a
  subset of a larger one (nested training sets). Without ``size`` every sample is kept. Before that,
  ``exclude_files`` (a text file of image paths) and ``exclude_captions`` (a regex) drop rows (a domain).
- ``world``: ``pool`` images are generated (default: ``size``), ``size`` of them kept as above.
- ``webdataset``: ``size`` keeps the first N samples in shard order, the shards shuffled by
  ``subset_seed`` (nested too), after ``exclude_captions`` and the class filter (by text matching);
  with a stream among the sources, :class:`~clipshift.data.mixture.MixedData` interleaves them.
- Class filter: with ``classes`` a wnid file, a source keeps the samples of those classes only:
  by their label where the source has one (ImageNet-Captions' wnid, a csv label column of wnids),
  else by text matching (a caption naming exactly one of the classes). A ``world`` source with
  ``classes`` a file of world class names keeps those classes.

Before anything is loaded, :func:`check_sources` checks every source (files, columns, JSON keys,
shards, the class and synonyms files, wnids) and names the file and what was expected. The run's
``config.yaml`` ends with a ``data:`` summary: images per source, rows read and kept per source,
``text_match_rate`` and, where sources carry true labels, ``text_match_precision``.

Overrides use dotted keys: ``train.epochs=3 objective=supervised``. The run folder gets
``config.yaml``, ``metrics.jsonl``, ``checkpoints/step-*`` (resumable with ``--resume``) and the
final ``model/`` (safetensors + JSON, loadable by ``clipshift eval --model RUN/model``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from ...data import TextMatcher
from ...data.lazy import DECODE_THREADS, PREFETCH, LazyImages, check_prefetch, take_images
from ...data.sources import (ClassSpace, class_space, file_rows, labelled_samples, read_imagenet_captions,
                             source_type, subset_indices)
from ...io import atomic_write_text
from ...models.factory import ModelSpec, build_model, get_tokenizer, save_checkpoint
from ...train.loop import TrainConfig, TrainData, train
from ...train.objectives import OBJECTIVES, needs
from .settings import load_settings, read_settings

__all__ = ["IN_MEMORY_MAX_IMAGES", "TrainRunConfig", "build_training_data", "check_sources", "class_names_for",
           "labelled_samples", "load_train_config", "read_imagenet_captions", "run_training"]

IN_MEMORY_MAX_IMAGES = 20000  # in_memory: auto decodes file-backed images once up to this many, else per batch
OBJECTIVE_KIND = {name: objective.model_kind for name, objective in OBJECTIVES.items()}  # declared by each objective
def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_subset_keys(i: int, source: dict) -> None:
    """ValueError naming the source when ``size``, ``pool`` or ``subset_seed`` are malformed."""
    where = f"sources[{i}] ({source['type']})"
    for key in ("size", "pool", "limit", "buffer"):
        if key in source and not _is_count(source[key]):
            raise ValueError(f"{where}: {key} must be a positive integer, got {source[key]!r}")
    seed = source.get("subset_seed", 0)
    seeds = seed if isinstance(seed, list) else [seed]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"{where}: subset_seed must be a non-negative int or a list of them, got {seed!r}")
    if "pool" in source and "size" in source and source["size"] > source["pool"]:
        raise ValueError(f"{where}: size {source['size']} exceeds pool {source['pool']} (the images generated)")


@dataclass
class TrainRunConfig:
    out: str = "runs/train"
    architecture: str = "clipshift-small"
    objective: str = "contrastive"
    init_from: str | None = None
    classes: str = "world"
    labels: str = "text_match"
    synonyms: str | None = None
    image_size: int = 32
    samples: int | None = None
    in_memory: str | bool = "auto"
    decode_threads: int | str = DECODE_THREADS
    prefetch: int = PREFETCH
    seed: int = 0
    sources: list = field(default_factory=lambda: [{"type": "world", "distribution": "narrow", "size": 4000}])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(objective="contrastive", epochs=10,
                                                                   batch_size=64, lr=2e-3))

    def validate(self) -> "TrainRunConfig":
        if self.objective not in OBJECTIVE_KIND:
            raise ValueError(f"objective: unknown {self.objective!r}; known: {sorted(OBJECTIVE_KIND)}")
        if self.labels not in ("text_match", "source"):
            raise ValueError(f"labels: expected 'text_match' or 'source', got {self.labels!r}")
        if self.in_memory not in ("auto", True, False):
            raise ValueError(f"in_memory: expected auto, true or false, got {self.in_memory!r}")
        if self.decode_threads != "auto" and (isinstance(self.decode_threads, bool)
                                              or not isinstance(self.decode_threads, int) or self.decode_threads < 0):
            raise ValueError(f"decode_threads: expected an integer >= 0 or auto, got {self.decode_threads!r}")
        check_prefetch(self.prefetch)
        if not self.sources:
            raise ValueError("sources: need at least one data source")
        for i, source in enumerate(self.sources):
            if not isinstance(source, dict):
                raise ValueError(f"sources[{i}]: expected a mapping (type: world | csv | ...), got {source!r}")
            kind = source_type(source, f"sources[{i}]")
            unknown = sorted(set(source) - kind.keys, key=str)
            if unknown:
                raise ValueError(f"sources[{i}] ({kind.name}): unknown keys {unknown}; known: {sorted(kind.keys)}")
            weight = source.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
                raise ValueError(f"sources[{i}]: weight must be a positive number, got {weight!r}")
            _check_subset_keys(i, source)
        if self.objective == "finetune" and not self.init_from:
            raise ValueError("objective 'finetune' needs init_from: the checkpoint folder of a simclr (or other) run")
        replace(self.train, objective=self.objective).validate()
        return self

    def resolved(self) -> "TrainRunConfig":
        """A copy whose ``train.objective`` is the run's ``objective`` (what the training loop reads)."""
        return replace(self, train=replace(self.train, objective=self.objective))


def load_train_config(path=None, overrides: dict | None = None) -> TrainRunConfig:
    """The defaults, updated by the YAML file at `path`, then by dotted `overrides`; resolved and validated."""
    values = _read_train_settings(path, overrides)
    return load_settings(TrainRunConfig, None, None, base=values, where="settings").resolved().validate()


def _read_train_settings(path, overrides: dict | None) -> dict:
    """The settings of a training run; an empty ``train:`` section is no section."""
    values = read_settings(path, overrides, "training config")
    if "train" in values and values["train"] is None:
        del values["train"]
    return values


# --- sources ---------------------------------------------------------------------------------------------------

def class_names_for(spec: str) -> list[str]:
    """The class names of a ``classes`` setting: the world's, open_clip's 1000 ImageNet names, the
    ImageNet names of a wnid file's classes (in file order), or a file's class names."""
    return class_space(spec).names


def _matcher(config: TrainRunConfig, class_names: list[str]) -> TextMatcher:
    """Text matching over the run's classes: a synonyms file, the world's synonyms, or for ImageNet
    classes each class's WordNet lemmas (a term shared by two classes names both: dropped)."""
    from ...data.imagenet_classes import imagenet_lemmas

    space = class_space(config.classes)
    shared = "ambiguous" if space.wnids is not None else "error"
    if config.synonyms:
        return TextMatcher.from_file(config.synonyms, class_names, shared_terms=shared)
    if config.classes == "world":
        from ...world.shapes import SYNONYMS

        return TextMatcher(class_names, SYNONYMS)
    if space.wnids is not None:
        return TextMatcher(class_names, imagenet_lemmas(space.wnids), shared_terms="ambiguous")
    return TextMatcher(class_names)


@dataclass
class _Rows:
    """One source's samples: images (in memory, or files decoded per batch), captions, true labels."""

    images: torch.Tensor | LazyImages
    captions: list[str]
    labels: np.ndarray | None

    def select(self, index: np.ndarray) -> "_Rows":
        images = take_images(self.images, index)
        return _Rows(images, [self.captions[i] for i in index], None if self.labels is None else self.labels[index])


def _read_files(source: dict, space: ClassSpace, config: TrainRunConfig) -> _Rows:
    """The rows of a file-backed source (csv, imagenet_captions); no image is decoded."""
    paths, captions, labels = file_rows(source, space)
    images = LazyImages(paths, config.image_size, num_workers=config.decode_threads, prefetch=config.prefetch)
    return _Rows(images, captions, labels)


def _load_source(i: int, source: dict, config: TrainRunConfig, space: ClassSpace, read: _Rows | None,
                 progress: bool) -> tuple[_Rows, dict]:
    """One source after its class filter and ``size``/``subset_seed`` subset, and its counts."""
    kind = source["type"]
    if source_type(source).storage == "generated":
        rows = _Rows(*source_type(source).generate(source, space, config.image_size, config.seed, progress))
    else:
        rows = read if read is not None else _read_files(source, space, config)
    counts = {"type": kind, "rows": len(rows.captions)}
    if rows.labels is not None and (rows.labels < 0).any():
        rows = rows.select(np.flatnonzero(rows.labels >= 0))
    elif rows.labels is None and space.subset:
        rows = rows.select(np.flatnonzero(_matcher(config, space.names).match_many(rows.captions) >= 0))
    counts["after_class_filter"] = len(rows.captions)
    size = source.get("size") if source_type(source).storage != "generated" or "pool" in source else None
    where = f"sources[{i}] ({kind})" + (" after the class filter" if space.subset else "")
    rows = rows.select(subset_indices(len(rows.captions), size, source.get("subset_seed", 0), where))
    counts["kept"] = len(rows.captions)
    if not counts["kept"]:
        raise ValueError(f"sources[{i}] ({kind}): no samples left after the class filter of classes "
                         f"{config.classes!r}")
    return rows, counts


def _concat(parts: list) -> torch.Tensor | LazyImages:
    if all(torch.is_tensor(p) for p in parts):
        return torch.cat(parts)
    return LazyImages.concat(parts)


def _in_memory(images, setting, progress: bool) -> tuple[torch.Tensor | LazyImages, bool]:
    """`images` decoded into memory (in_memory true, or auto up to IN_MEMORY_MAX_IMAGES) or left lazy."""
    if torch.is_tensor(images):
        return images, True
    if setting is True or (setting == "auto" and len(images) <= IN_MEMORY_MAX_IMAGES):
        return images.materialize(progress=progress), True
    return images, False


def _text_labels(config: TrainRunConfig, space: ClassSpace, captions: list[str]) -> np.ndarray | None:
    """The class each caption names (-1: none or several); None when the labels come from the
    sources and the classes cannot be text-matched (e.g. a class-name file whose names clash)."""
    try:
        matcher = _matcher(config, space.names)
    except ValueError:
        if config.labels == "text_match":
            raise
        return None
    return matcher.match_many(captions)


def _match_summary(matched: np.ndarray, true: np.ndarray | None) -> dict:
    """Match rate, and where true labels are known (>= 0) the precision of the matched ones."""
    summary = {"text_match_rate": float((matched >= 0).mean())}
    if true is not None:
        judged = (matched >= 0) & (true >= 0)
        if judged.any():
            summary["text_match_precision"] = float((matched[judged] == true[judged]).mean())
    return summary


def build_training_data(config: TrainRunConfig, tokenizer, progress: bool = True,
                        read: list | None = None) -> tuple[TrainData, dict]:
    """The mixture of `config.sources` as one :class:`TrainData`, with the fields the objective
    needs, and a summary (images per source, counts per source, text-match rate and precision).
    `read`: the rows :func:`check_sources` returned (not read again)."""
    space = class_space(config.classes)
    read = read or [None] * len(config.sources)
    if any(source_type(s).streams for s in config.sources):
        return _mixed_data(config, tokenizer, space, read, progress)
    loaded, per_source = [], []
    for i, source in enumerate(config.sources):
        rows, counts = _load_source(i, source, config, space, read[i], progress)
        loaded.append(rows)
        per_source.append(counts)
    weights = np.array([float(s.get("weight", 1.0)) for s in config.sources])
    sizes = np.array([len(part.captions) for part in loaded])
    total = int(config.samples) if config.samples else int(sizes.sum())
    counts = np.floor(total * weights / weights.sum()).astype(int)
    counts[: total - counts.sum()] += 1
    rng = np.random.default_rng(config.seed)
    picks = [np.sort(rng.choice(n, size=c, replace=c > n)) for n, c in zip(sizes, counts)]
    parts = [part.select(p) for part, p in zip(loaded, picks)]
    images = _concat([part.images for part in parts])
    captions = [c for part in parts for c in part.captions]
    true = np.concatenate([part.labels if part.labels is not None else np.full(len(part.captions), -1)
                           for part in parts])
    summary = {"images_per_source": [int(c) for c in counts], "images": int(len(images)), "sources": per_source}
    matched = _text_labels(config, space, captions)  # reported whatever the labels; used for text_match
    if matched is not None:
        summary.update(_match_summary(matched, true if any(part.labels is not None for part in parts) else None))
    tokens, labels = None, None
    if "tokens" in needs(config.objective):
        tokens = tokenizer(captions)
    elif "labels" in needs(config.objective):
        if config.labels == "source":
            missing = [i for i, part in enumerate(parts) if part.labels is None]
            if missing:
                raise ValueError(f"labels: 'source' but sources[{missing[0]}] ({config.sources[missing[0]]['type']}) "
                                 f"has no labels")
            labels = torch.from_numpy(true).long()
        else:
            labels = torch.from_numpy(matched).long()
        keep = labels >= 0
        images = take_images(images, keep)
        labels = labels[keep]
    images, summary["in_memory"] = _in_memory(images, config.in_memory, progress)
    summary["images_kept"] = int(len(images))
    return TrainData(images, labels=labels, tokens=tokens), summary


def _stream_part(source: dict, config: TrainRunConfig, space: ClassSpace):
    """A webdataset source as a part of a mixture: its take (``size``) located, or the whole stream."""
    from ...data.streamed import StreamRules, open_stream

    labels = config.labels if "labels" in needs(config.objective) else None
    match = _matcher(config, space.names).match_many if space.subset or labels == "text_match" else None
    return open_stream(source, StreamRules(subset=space.subset, labels=labels, match=match), config.image_size)


def _mixed_data(config: TrainRunConfig, tokenizer, space: ClassSpace, read: list, progress: bool):
    """Sources with a stream among them, interleaved by weight (:class:`~clipshift.data.mixture.MixedData`);
    a source's rows without the label the objective needs are left out of it."""
    from ...data.mixture import MixedData, RowPart

    needs_labels, parts, per_source = "labels" in needs(config.objective), [], []
    for i, source in enumerate(config.sources):
        if source_type(source).streams:
            parts.append(read[i] or _stream_part(source, config, space))
            per_source.append({"type": source["type"], **parts[-1].summary})
            continue
        rows, counts = _load_source(i, source, config, space, read[i], progress)
        labels = None
        if needs_labels:
            labels = rows.labels if config.labels == "source" else _text_labels(config, space, rows.captions)
            if labels is None:
                raise ValueError(f"labels: 'source' but sources[{i}] ({source['type']}) has no labels")
            rows, labels = rows.select(np.flatnonzero(labels >= 0)), labels[labels >= 0]
            counts["labelled"] = len(labels)
        parts.append(RowPart(rows.images, rows.captions, labels))
        per_source.append(counts)
    rows = sum(part.length for part in parts if isinstance(part, RowPart))
    in_memory = config.in_memory is True or (config.in_memory == "auto" and rows <= IN_MEMORY_MAX_IMAGES)
    for part in parts:
        if isinstance(part, RowPart) and in_memory:
            part.images = _in_memory(part.images, True, progress)[0]
    if not config.samples and any(part.length is None for part in parts):
        raise ValueError("samples: a stream read whole has no length; state the samples per epoch (or a size)")
    samples = int(config.samples or sum(part.length for part in parts))
    data = MixedData(parts, [float(s.get("weight", 1.0)) for s in config.sources], samples,
                     config.train.batch_size, seed=config.seed, need_labels=needs_labels,
                     tokenizer=tokenizer if "tokens" in needs(config.objective) else None)
    return data, {"images_per_source": [int(c) for c in data.counts], "images": len(data), "streamed": True,
                  "interleave": "seeded, by weight, the same counts every epoch", "sources": per_source,
                  "in_memory": in_memory}


# --- checks before training ------------------------------------------------------------------------------------

def check_sources(config: TrainRunConfig) -> list:
    """Check every source before anything is trained, naming the file and what was expected: the
    classes and synonyms files, ``init_from``, each table (columns, image files, labels), each
    ImageNet-Captions JSON (keys, wnids, images under its root), each shard pattern (files exist,
    the first sample has an image and a caption), the first image of each file-backed source
    decodes, and ``size`` fits the samples left after the class filter (a stream's take is found).
    Returns the rows read (a stream's take; None for world sources and whole streams), for
    :func:`build_training_data`'s `read`."""
    from ...data import decode_rgb

    space = class_space(config.classes)
    if config.synonyms or config.labels == "text_match" or space.subset:
        _matcher(config, space.names)  # the synonyms file read and checked against the classes
    if config.init_from and not (Path(config.init_from) / "model.safetensors").is_file():
        raise FileNotFoundError(f"init_from: {Path(config.init_from) / 'model.safetensors'} not found (expected the "
                                f"checkpoint folder of an earlier run, e.g. RUN/model)")
    needs_labels = "labels" in needs(config.objective) and config.labels == "source"
    read = []
    for i, source in enumerate(config.sources):
        kind, where = source_type(source), f"sources[{i}] ({source['type']})"
        try:
            kind.require(source)
            if kind.check is not None:
                kind.check(source, need_caption="tokens" in needs(config.objective) or config.labels == "text_match",
                           need_label=needs_labels)
            if kind.streams and source.get("size"):
                read.append(_stream_part(source, config, space))  # the take, located once
                continue
            if not kind.file_backed:
                read.append(None)
                continue
            rows = _read_files(source, space, config)
            decode_rgb(rows.images.paths[0], config.image_size)
            if needs_labels and rows.labels is None:
                raise ValueError(f"labels: 'source', but the source has no labels for classes {config.classes!r} "
                                 f"(csv: a label_column; imagenet_captions: classes 'imagenet' or a wnid file)")
            _load_source(i, source, config, space, rows, progress=False)
            read.append(rows)
        except (ValueError, FileNotFoundError) as error:
            raise type(error)(f"{where}: {error}") from None
    return read


# --- the run ---------------------------------------------------------------------------------------------------

def _init_tower(model, directory) -> None:
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / "model.safetensors"))
    tower = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if not tower:
        raise ValueError(f"init_from {directory}: the checkpoint has no image tower (visual.*) weights")
    model.visual.load_state_dict(tower)


def run_training(config: TrainRunConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train one model as configured; returns the folder of the final model. Every source is
    checked (:func:`check_sources`) before anything is built or trained."""
    from ...distributed import init_distributed_from_env

    config = config.resolved().validate()
    read = check_sources(config)
    rank, world = init_distributed_from_env()
    out = Path(config.out)
    class_names = class_names_for(config.classes)
    kind = OBJECTIVE_KIND[config.objective]
    spec = ModelSpec(kind, config.architecture, class_names,
                     metadata={"objective": config.objective, "sources": config.sources, "seed": config.seed})
    tokenizer = get_tokenizer(config.architecture)
    data, summary = build_training_data(config, tokenizer, progress=progress and rank == 0, read=read)
    model = build_model(spec, seed=config.seed)
    if config.init_from:
        _init_tower(model, config.init_from)
    if torch.cuda.is_available():
        model = model.to(torch.device("cuda", torch.cuda.current_device()))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump({**asdict(config), "data": summary}, sort_keys=False))
    train(model, data, config.train, log_path=out / "metrics.jsonl", progress=progress, desc=config.objective,
          checkpoint_dir=out / "checkpoints", spec=spec, resume=resume)
    final = out / "model"
    if rank == 0:
        save_checkpoint(model, spec, final)
    return final


def text_match_summary(config: TrainRunConfig) -> dict:
    """Text matching over every caption of the run's file-backed sources (csv, imagenet_captions),
    before any subset: ``text_match_rate`` and, where the sources carry true labels,
    ``text_match_precision``; {} when no source is file-backed."""
    space = class_space(config.classes)
    captions, labels = [], []
    for source in config.sources:
        if not source_type(source).file_backed:
            continue
        _, texts, true = file_rows({k: v for k, v in source.items() if k not in ("size", "subset_seed")}, space)
        captions += list(texts)
        labels.append(np.full(len(texts), -1) if true is None else np.asarray(true))
    if not captions:
        return {}
    matched = _matcher(config, space.names).match_many(captions)
    true = np.concatenate(labels)
    return _match_summary(matched, true if (true >= 0).any() else None)
