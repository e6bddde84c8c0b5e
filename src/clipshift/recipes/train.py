"""``clipshift train CONFIG.yaml [key=value ...]``: one model, one objective, data from weighted sources.

A configuration (YAML; every key optional)::

    out: runs/train
    architecture: clipshift-small        # an open_clip config; the same image tower for every objective
    objective: contrastive               # contrastive | supervised | simclr | finetune
    init_from: null                      # checkpoint folder whose image tower starts this run (finetune after simclr)
    classes: world                       # world | imagenet | a text file with one class name per line
    labels: text_match                   # text_match (from captions) | source (the sources' own labels)
    synonyms: null                       # synonyms file for text matching
    image_size: 32
    samples: null                        # images per epoch drawn from the mixture (default: all of them;
                                         # required for webdataset sources, which are streamed)
    seed: 0
    sources:                             # weighted mixture; weights are renormalised
      - {type: world, distribution: narrow, size: 4000, weight: 0.7}
      - {type: world, distribution: diverse, size: 4000, weight: 0.3}
      - {type: csv, path: data/train.tsv, filepath_column: filepath, caption_column: title, label_column: null}
      - {type: imagenet_captions, json: imagenet_captions.json, root: /data/imagenet/train,
         fields: [title, description, tags]}
      - {type: webdataset, urls: "shards/{00000..00127}.tar", weight: 1, buffer: 1000}   # streamed
    train: {epochs: 10, batch_size: 256, lr: 0.002, checkpoint_every: 200, ...}   # TrainConfig

Overrides use dotted keys: ``train.epochs=3 objective=supervised``. The run folder gets
``config.yaml``, ``metrics.jsonl``, ``checkpoints/step-*`` (resumable with ``--resume``) and the
final ``model/`` (safetensors + JSON, loadable by ``clipshift eval --model RUN/model``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml

from ..data import TextMatcher, load_images, read_caption_table
from ..data.csv_source import label_index
from ..models.factory import ModelSpec, atomic_write_text, build_model, get_tokenizer, save_checkpoint
from ..train.loop import TrainConfig, TrainData, train
from .config import read_settings

DECODE_THREADS = 4  # PIL decodes with the GIL released: threads overlap the file reads and decodes
OBJECTIVE_KIND = {"contrastive": "clip", "supervised": "classifier", "finetune": "classifier", "simclr": "simclr"}
SOURCE_KEYS = {
    "world": {"distribution", "size", "seed", "weight", "type"},
    "csv": {"path", "sep", "filepath_column", "caption_column", "label_column", "weight", "type"},
    "imagenet_captions": {"json", "root", "fields", "weight", "type", "limit"},
    "webdataset": {"urls", "weight", "type", "buffer"},
}


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
    seed: int = 0
    sources: list = field(default_factory=lambda: [{"type": "world", "distribution": "narrow", "size": 4000}])
    train: TrainConfig = field(default_factory=lambda: TrainConfig(objective="contrastive", epochs=10,
                                                                   batch_size=64, lr=2e-3))

    def validate(self) -> "TrainRunConfig":
        if self.objective not in OBJECTIVE_KIND:
            raise ValueError(f"objective: unknown {self.objective!r}; known: {sorted(OBJECTIVE_KIND)}")
        if self.labels not in ("text_match", "source"):
            raise ValueError(f"labels: expected 'text_match' or 'source', got {self.labels!r}")
        if not self.sources:
            raise ValueError("sources: need at least one data source")
        for i, source in enumerate(self.sources):
            kind = source.get("type")
            if kind not in SOURCE_KEYS:
                raise ValueError(f"sources[{i}]: unknown type {kind!r}; known: {sorted(SOURCE_KEYS)}")
            unknown = sorted(set(source) - SOURCE_KEYS[kind])
            if unknown:
                raise ValueError(f"sources[{i}] ({kind}): unknown keys {unknown}; known: {sorted(SOURCE_KEYS[kind])}")
            if float(source.get("weight", 1.0)) <= 0:
                raise ValueError(f"sources[{i}]: weight must be positive, got {source['weight']!r}")
        streamed = [s.get("type") == "webdataset" for s in self.sources]
        if any(streamed) and not all(streamed):
            raise ValueError("sources: webdataset sources are streamed and cannot be mixed with in-memory ones "
                             "(world, csv, imagenet_captions); write those as shards too")
        if any(streamed) and not self.samples:
            raise ValueError("samples: a stream has no length; state the samples per epoch for webdataset sources")
        if self.objective == "finetune" and not self.init_from:
            raise ValueError("objective 'finetune' needs init_from: the checkpoint folder of a simclr (or other) run")
        self.train.objective = self.objective
        self.train.validate()
        return self


def load_train_config(path=None, overrides: dict | None = None) -> TrainRunConfig:
    """The defaults, updated by the YAML file at `path`, then by dotted `overrides`; validated."""
    values = read_settings(path, overrides, "training config")
    known = {f.name for f in fields(TrainRunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {sorted(known)}")
    train_values = values.pop("train", {}) or {}
    train_known = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(train_values) - train_known)
    if bad:
        raise ValueError(f"train: unknown settings {bad}; known: {sorted(train_known)}")
    base = TrainRunConfig()
    train_config = TrainConfig(**{**asdict(base.train), **train_values})
    return TrainRunConfig(**{**{k: v for k, v in asdict(base).items() if k != "train"}, **values},
                          train=train_config).validate()


# --- sources ---------------------------------------------------------------------------------------------------

def class_names_for(spec: str) -> list[str]:
    if spec == "world":
        from ..world.shapes import CLASS_NAMES

        return list(CLASS_NAMES)
    if spec == "imagenet":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"classes: not 'world' or 'imagenet', and no file {path}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: class names must be unique")
    return names


def _world_source(source: dict, image_size: int, seed: int, progress: bool) -> dict:
    from ..world.distributions import get_distribution
    from ..world.generate import generate_split

    split = generate_split(get_distribution(source.get("distribution", "narrow")), int(source.get("size", 4000)),
                           split="train", seed=int(source.get("seed", seed)), size=image_size, progress=progress)
    images = torch.from_numpy(split.images).permute(0, 3, 1, 2).contiguous()
    return {"images": images, "captions": list(split.captions), "labels": torch.from_numpy(np.array(split.labels)).long()}


def _labels_from(values, class_names: list[str], where: str) -> torch.Tensor:
    """Class indices of a table's labels (ints or class names); every row must name a class."""
    try:
        labels = [label_index(value, class_names, i + 1) for i, value in enumerate(values)]
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    unlabelled = [i + 1 for i, label in enumerate(labels) if label < 0]
    if unlabelled:
        raise ValueError(f"{where}: label -1 of row {unlabelled[0]} is out of range for {len(class_names)} classes")
    return torch.tensor(labels, dtype=torch.long)


def _csv_source(source: dict, image_size: int, class_names: list[str], progress: bool) -> dict:
    table = read_caption_table(source["path"], sep=source.get("sep"),
                               filepath_column=source.get("filepath_column", "filepath"),
                               caption_column=source.get("caption_column", "caption"),
                               label_column=source.get("label_column") or "label")
    images = load_images(list(table["filepath"]), size=image_size, num_workers=DECODE_THREADS, progress=progress)
    labels = _labels_from(list(table["label"]), class_names, source["path"]) if "label" in table else None
    return {"images": images, "captions": list(table["caption"]), "labels": labels}


def read_imagenet_captions(json_path, root, fields_used=("title", "description", "tags"),
                           limit: int | None = None) -> tuple[list[str], list[str], list[str]]:
    """ImageNet-Captions entries ``{"filename", "wnid", "title", "description", "tags"}`` joined to an
    ImageNet train tree ``root/<wnid>/<filename>``: (image paths, captions, wnids). A caption joins
    the configured fields (tags joined by spaces), skipping empty ones; an entry with none is dropped."""
    json_path, root = Path(json_path), Path(root)
    if not json_path.is_file():
        raise FileNotFoundError(f"ImageNet-Captions file not found: {json_path}")
    entries = json.loads(json_path.read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{json_path}: expected a JSON list of entries")
    bad = sorted(set(fields_used) - {"title", "description", "tags"})
    if bad:
        raise ValueError(f"imagenet_captions fields: unknown {bad}; known: title, description, tags")
    paths, captions, wnids, missing = [], [], [], []
    for i, entry in enumerate(entries[:limit] if limit else entries):
        for key in ("filename", "wnid"):
            if key not in entry:
                raise ValueError(f"{json_path}: entry {i} has no {key!r}")
        parts = []
        for name in fields_used:
            value = entry.get(name) or ""
            value = " ".join(str(t) for t in value) if isinstance(value, list) else str(value)
            if value.strip():
                parts.append(value.strip())
        if not parts:
            continue
        path = root / entry["wnid"] / entry["filename"]
        if not path.is_file():
            missing.append(str(path))
            continue
        paths.append(str(path))
        captions.append(". ".join(parts))
        wnids.append(entry["wnid"])
    if missing:
        raise FileNotFoundError(f"{len(missing)} ImageNet-Captions images are not under {root}, e.g. {missing[:3]} "
                                f"(expected the ImageNet train tree: <root>/<wnid>/<filename>)")
    if not paths:
        raise ValueError(f"{json_path}: no entry has any of the fields {list(fields_used)}")
    return paths, captions, wnids


def _imagenet_captions_source(source: dict, image_size: int, class_names: list[str], progress: bool) -> dict:
    from ..data.imagenet import imagenet_wnids

    paths, captions, wnids = read_imagenet_captions(source["json"], source["root"],
                                                    tuple(source.get("fields", ("title", "description", "tags"))),
                                                    source.get("limit"))
    labels = None
    if len(class_names) == 1000:
        index = {w: i for i, w in enumerate(imagenet_wnids())}
        labels = torch.tensor([index[w] for w in wnids], dtype=torch.long)
    return {"images": load_images(paths, size=image_size, num_workers=DECODE_THREADS, progress=progress),
            "captions": captions, "labels": labels}


def build_training_data(config: TrainRunConfig, tokenizer, progress: bool = True) -> tuple[TrainData, dict]:
    """The mixture of `config.sources` as one :class:`TrainData`, with the fields the objective
    needs, and a summary (images per source, text-match rate)."""
    class_names = class_names_for(config.classes)
    if config.sources[0]["type"] == "webdataset":
        return _streaming_data(config, tokenizer, class_names)
    loaded = []
    for source in config.sources:
        kind = source["type"]
        if kind == "world":
            loaded.append(_world_source(source, config.image_size, config.seed, progress))
        elif kind == "csv":
            loaded.append(_csv_source(source, config.image_size, class_names, progress))
        else:
            loaded.append(_imagenet_captions_source(source, config.image_size, class_names, progress))
    weights = np.array([float(s.get("weight", 1.0)) for s in config.sources])
    sizes = np.array([len(part["images"]) for part in loaded])
    total = int(config.samples) if config.samples else int(sizes.sum())
    counts = np.floor(total * weights / weights.sum()).astype(int)
    counts[: total - counts.sum()] += 1
    rng = np.random.default_rng(config.seed)
    picks = [np.sort(rng.choice(n, size=c, replace=c > n)) for n, c in zip(sizes, counts)]
    images = torch.cat([part["images"][torch.from_numpy(p)] for part, p in zip(loaded, picks)])
    captions = [part["captions"][i] for part, p in zip(loaded, picks) for i in p]
    summary = {"images_per_source": [int(c) for c in counts], "images": int(len(images))}
    objective = config.objective
    if objective == "contrastive":
        return TrainData(images, tokens=tokenizer(captions)), summary
    if objective == "simclr":
        return TrainData(images), summary
    if config.labels == "source":
        parts = []
        for i, (part, p) in enumerate(zip(loaded, picks)):
            if part["labels"] is None:
                raise ValueError(f"labels: 'source' but sources[{i}] ({config.sources[i]['type']}) has no labels")
            parts.append(part["labels"][torch.from_numpy(p)])
        labels = torch.cat(parts)
    else:
        matcher = _matcher(config, class_names)
        labels = torch.from_numpy(matcher.match_many(captions)).long()
        summary["text_match_rate"] = float((labels >= 0).float().mean())
    keep = labels >= 0
    return TrainData(images[keep], labels=labels[keep]), summary


def _matcher(config: TrainRunConfig, class_names: list[str]) -> TextMatcher:
    if config.synonyms:
        return TextMatcher.from_file(config.synonyms, class_names)
    if config.classes == "world":
        from ..world.shapes import SYNONYMS

        return TextMatcher(class_names, SYNONYMS)
    return TextMatcher(class_names)


def _streaming_data(config: TrainRunConfig, tokenizer, class_names: list[str]):
    from ..data.shards import ShardStream, StreamingData

    stream = ShardStream([s["urls"] for s in config.sources], [float(s.get("weight", 1.0)) for s in config.sources],
                         seed=config.seed, buffer=int(config.sources[0].get("buffer", 1000)))
    objective = config.objective
    needs_labels = objective in ("supervised", "finetune")
    data = StreamingData(stream, int(config.samples), config.train.batch_size, config.image_size,
                         tokenizer=tokenizer if objective == "contrastive" else None, need_labels=needs_labels,
                         labeller=_matcher(config, class_names).match_many
                         if needs_labels and config.labels == "text_match" else None)
    return data, {"images": len(data), "streamed": True}


def _init_tower(model, directory) -> None:
    from safetensors.torch import load_file

    state = load_file(str(Path(directory) / "model.safetensors"))
    tower = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if not tower:
        raise ValueError(f"init_from {directory}: the checkpoint has no image tower (visual.*) weights")
    model.visual.load_state_dict(tower)


def run_training(config: TrainRunConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train one model as configured; returns the folder of the final model."""
    from ..distributed import init_distributed_from_env

    rank, world = init_distributed_from_env()
    out = Path(config.out)
    class_names = class_names_for(config.classes)
    kind = OBJECTIVE_KIND[config.objective]
    spec = ModelSpec(kind, config.architecture, class_names,
                     metadata={"objective": config.objective, "sources": config.sources, "seed": config.seed})
    tokenizer = get_tokenizer(config.architecture)
    data, summary = build_training_data(config, tokenizer, progress=progress and rank == 0)
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


def labelled_samples(source: dict, class_names: list[str]) -> list[tuple[str, int]]:
    """(image path, class index) of every sample of `source` whose label is one of `class_names`
    (ImageNet-Captions: its wnid; a CSV: its label column); [] for sources without labels."""
    kind = source.get("type")
    if kind == "imagenet_captions":
        from ..data.imagenet import imagenet_wnids

        paths, _, wnids = read_imagenet_captions(source["json"], source["root"], limit=source.get("limit"))
        if len(class_names) == 1000:
            index = {w: i for i, w in enumerate(imagenet_wnids())}
        else:
            position = {name: i for i, name in enumerate(class_names)}
            index = {w: position[n] for w, n in zip(imagenet_wnids(), class_names_for("imagenet")) if n in position}
        return [(p, index[w]) for p, w in zip(paths, wnids) if w in index]
    if kind == "csv":
        table = read_caption_table(source["path"], sep=source.get("sep"),
                                   filepath_column=source.get("filepath_column", "filepath"),
                                   caption_column=source.get("caption_column", "caption"),
                                   label_column=source.get("label_column") or "label")
        if "label" not in table:
            return []
        labels = [label_index(v, class_names, i + 1) for i, v in enumerate(table["label"])]
        return [(str(p), int(y)) for p, y in zip(table["filepath"], labels) if y >= 0]
    return []
