"""Many checkpoints, one decode: ``clipshift eval --models FILE``.

    entries = read_model_list("models.txt")          # one `model [pretrained] [name=ID]` a line, all checked
    table = evaluate_models(entries, suites, "runs/eval", ManyOptions(models_at_once=8))

Every dataset is decoded once per pass over it, and every decoded batch is encoded by every model of
the pass: each image is read and decoded from its file once, then put through each *distinct*
preprocessing of the pass's models (models with the same transform share its output), exactly as
:class:`~clipshift.data.imagenet.SuiteDataset` does for one model, in the same batches, so a model's
numbers are those of its own ``clipshift eval --model``. Up to `models_at_once` models are held at
once; more make more passes, each over the models of the next chunk. The feature and zero-shot-head
caches work per model as for one model: a model whose features of a dataset are cached is not encoded.

Each (model, dataset) pair's rows are written, as soon as the pair is scored, to
``OUT/results/<model id>/<dataset>.csv`` (atomically; with its per-class rows and per-image
predictions when asked for); a pair whose files are there is not scored again, so a killed run
resumes where it stopped, unless the model's weights changed since (beside each results file,
``<dataset>.weights.json`` records the weights' identity, as the feature cache keys them: the weights
files' digests; a pair whose weights changed is scored again, saying so). ``OUT/results/settings.json``
holds what the pairs were scored with (templates, class names, group, strictness, ``--no-amp``, each
dataset's folder): a rerun with other settings is refused rather than mixed in. The long table
``OUT/results.csv`` is built from the pair files at the end.
"""

from __future__ import annotations

import gc
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset
from torchvision.transforms.functional import pil_to_tensor

from ..data.imagenet import EvalSuite, SuiteDataset
from ..distributed import default_device, world
from ..io import atomic_write_text
from ..models.interface import EvalModel
from ..models.load import check_model, file_digest, load_model, model_id
from ..progress import progress_bar
from .loop import (Features, cached_features, check_decoded, encode_batch, feature_cache_path, gather_features,
                   join_shard, store_features)
from .predictions import predictions_path, safe_name, write_predictions
from .protocol import digest
from .real import Scoring, append_results, evaluate_model, model_scoring

__all__ = ["ModelEntry", "ManyOptions", "read_model_list", "evaluate_models", "pair_file", "encode_together",
           "RESULTS_DIR"]

RESULTS_DIR = "results"  # OUT/results/<model id>/<dataset>.csv
LINE_SYNTAX = "model [pretrained] [name=ID]"
LINE_FORMAT = f"one `{LINE_SYNTAX}` per line"
OLD_DEFAULTS = {"--no-amp": False}  # settings a settings.json written before they were recorded holds


# --- the list of models ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelEntry:
    """One line of a model list: the model (open_clip name, ``hf-hub:``, ``timm/ARCH`` or a clipshift
    checkpoint folder), its pretrained tag or weights file, an optional ``name=`` (the results' model
    id; default the name :func:`~clipshift.models.load.load_model` gives) and its line number."""

    model: str
    pretrained: str | None = None
    name: str | None = None
    line: int = 0

    @property
    def id(self) -> str:
        return self.name or model_id(self.model, self.pretrained)

    def load(self) -> EvalModel:
        model = load_model(self.model, self.pretrained)
        model.name = self.id
        return model


def _entry(path: Path, number: int, text: str) -> ModelEntry:
    where = f"{path} line {number}"
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise ValueError(f"{where}: {error} ({LINE_FORMAT})") from None
    names = [w[len("name="):] for w in words if w.startswith("name=")]
    words = [w for w in words if not w.startswith("name=")]
    if not words or len(words) > 2 or len(names) > 1 or (names and not names[0]):
        raise ValueError(f"{where}: {text!r} is not `{LINE_SYNTAX}`")
    entry = ModelEntry(words[0], words[1] if len(words) > 1 else None, names[0] if names else None, number)
    try:
        check_model(entry.model, entry.pretrained)
    except (ValueError, FileNotFoundError) as error:
        raise type(error)(f"{where}: {error}") from None
    return entry


def _check_duplicates(path: Path, entries: list[ModelEntry]) -> None:
    weights: dict[tuple, ModelEntry] = {}
    ids: dict[str, ModelEntry] = {}
    folders: dict[str, ModelEntry] = {}  # a case-insensitive file system holds one of `A` and `a`
    for entry in entries:
        key = tuple(str(Path(p).resolve()) if p and Path(p).exists() else p for p in (entry.model, entry.pretrained))
        if key in weights:
            raise ValueError(f"{path} lines {weights[key].line} and {entry.line} name the same model "
                             f"({' '.join(p for p in (entry.model, entry.pretrained) if p)}); keep one")
        if entry.id in ids:
            raise ValueError(f"{path} lines {ids[entry.id].line} and {entry.line} both give the model id "
                             f"{entry.id!r} (their results would overwrite each other); add name=ID to one")
        folder = safe_name(entry.id)
        if folder.casefold() in folders:
            other = folders[folder.casefold()]
            raise ValueError(f"{path} lines {other.line} and {entry.line} give the model ids {other.id!r} and "
                             f"{entry.id!r}, both kept in the results folder {folder!r} (their results would "
                             f"overwrite each other); add name=ID to one")
        weights[key], ids[entry.id], folders[folder.casefold()] = entry, entry, entry


def read_model_list(path) -> list[ModelEntry]:
    """The models of a list file, :data:`LINE_FORMAT` (``#`` comments and blank lines ignored; paths
    relative to the current folder, as for ``--model``), every line checked before anything is loaded:
    a one-line error names the file and line of a model that does not exist or that open_clip, timm
    and clipshift cannot load, and both lines of a duplicate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--models {path}: no such file ({LINE_FORMAT})")
    entries = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = raw.strip()
        if text and not text.startswith("#"):
            entries.append(_entry(path, number, text.split(" #")[0].strip()))
    if not entries:
        raise ValueError(f"{path}: no models ({LINE_FORMAT})")
    _check_duplicates(path, entries)
    return entries


# --- the settings and the pair files -----------------------------------------------------------------------------

@dataclass
class ManyOptions:
    """How the models are scored (as ``clipshift eval``'s options of the same names) and how many are
    held at once (`models_at_once`)."""

    templates: Sequence[str] | None = None
    class_names: Sequence[str] | None = None
    cache_dir: Path | None = None
    batch_size: int = 256
    workers: int = 4
    device: torch.device | None = None
    strict: bool = False
    amp: bool = True
    progress: bool = True
    extra: dict = field(default_factory=dict)
    per_class: bool = False
    save_predictions: bool = False
    keep_logits: bool = False
    models_at_once: int = 8


def pair_file(out, model: str, dataset: str, kind: str = "results") -> Path:
    """``OUT/results/<model>/<dataset>.csv`` (`kind` ``per_class``: ``<dataset>.per_class.csv``)."""
    suffix = ".csv" if kind == "results" else f".{kind}.csv"
    return Path(out) / RESULTS_DIR / safe_name(model) / f"{safe_name(dataset)}{suffix}"


def _weights_record(entry: ModelEntry, amp: bool, before: Mapping | None = None) -> dict:
    """What a pair is scored with: the entry's weights, identified as the loader's ``weights_id`` does
    (its architecture or tag words, and the SHA-256 digest of each local weights file: a checkpoint
    folder's ``*.safetensors``, a weights file), and `amp`. A file whose size and modification time are
    those `before` recorded keeps its recorded digest rather than being read again."""
    known = (before or {}).get("files", {})
    words, files = [], {}
    for part in (entry.model, entry.pretrained):
        if not part or not Path(part).exists():
            words += [part] if part else []
            continue
        for path in sorted(Path(part).glob("*.safetensors")) if Path(part).is_dir() else [Path(part)]:
            stat, key = path.stat(), str(path.resolve())
            seen = known.get(key)
            same = isinstance(seen, list) and seen[:2] == [stat.st_size, stat.st_mtime_ns]
            files[key] = [stat.st_size, stat.st_mtime_ns, seen[2] if same else file_digest(path)]
            words.append(files[key][2])
    return {"weights": " ".join(words), "amp": amp, "files": files}


def _record_file(out: Path, model: str, dataset: str) -> Path:
    """``OUT/results/<model>/<dataset>.weights.json``: what the pair was scored with."""
    return pair_file(out, model, dataset).with_suffix(".weights.json")


def _pair_state(out: Path, entry: ModelEntry, dataset: str, options: ManyOptions) -> str | None:
    """None: the pair is to be scored (not yet, or not wholly, written); ``done``; else why it is
    rescored (the weights or --no-amp differ from those it was scored with, or were not recorded)."""
    model = entry.id
    if not (pair_file(out, model, dataset).exists()
            and (not options.per_class or pair_file(out, model, dataset, "per_class").exists())
            and (not (options.save_predictions or options.keep_logits)
                 or predictions_path(out, model, dataset).exists())):
        return None
    try:
        before = json.loads(_record_file(out, model, dataset).read_text())
    except (OSError, ValueError):
        return "no record of the weights it was scored with"
    now = _weights_record(entry, options.amp, before)
    if before.get("weights") != now["weights"]:
        return "weights changed since scored"
    return "done" if before.get("amp") == now["amp"] else "scored with other --no-amp"


def _check_settings(out: Path, suites: Mapping[str, EvalSuite], options: ManyOptions) -> None:
    """Record the settings the pair files are scored with; refuse a run whose settings differ."""
    path = out / RESULTS_DIR / "settings.json"
    now = {"templates": digest(options.templates) if options.templates is not None else "openai",
           "class names": digest(options.class_names) if options.class_names is not None else "imagenet",
           "--strict": options.strict, "--save-logits": options.keep_logits, "--no-amp": not options.amp,
           "--group": {k: str(v) for k, v in sorted(options.extra.items())}}
    roots = {name: str(Path(suite.root).resolve()) for name, suite in suites.items()}
    if path.exists():
        before = json.loads(path.read_text())
        differ = [k for k in now if before.get(k, OLD_DEFAULTS.get(k)) != now[k]]
        differ += [f"{name}'s folder" for name, root in roots.items() if before["roots"].get(name, root) != root]
        if differ:
            raise ValueError(f"{out / RESULTS_DIR} holds pairs scored with other settings ({', '.join(differ)}); "
                             f"score into another --out, or remove {out / RESULTS_DIR} to start again")
        roots = {**before["roots"], **roots}
    if world()[0] == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({**now, "roots": roots}, indent=1) + "\n")


def _write_pair(out: Path, model: EvalModel, dataset: str, rows: list[dict], per_class: list | None,
                predictions: list | None, record: dict) -> None:
    """A pair's per-class rows, predictions and weights record first, its results file last (the pair is
    done when it exists)."""
    if per_class is not None:
        path = pair_file(out, model.name, dataset, "per_class")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, pd.DataFrame(per_class).to_csv(index=False))
    for scored in predictions or []:
        write_predictions(out, model.name, scored)
    path = pair_file(out, model.name, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(_record_file(out, model.name, dataset), json.dumps(record, indent=1) + "\n")
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def build_tables(out, models: Sequence[str], datasets: Sequence[str], per_class: bool = False) -> pd.DataFrame:
    """``OUT/results.csv`` (and ``OUT/per_class.csv``) with the rows of every (model, dataset) pair file,
    replacing rows of the same model, dataset and metric there; returns the results table."""
    out = Path(out)
    rows = pd.concat([pd.read_csv(pair_file(out, m, d)) for m in models for d in datasets], ignore_index=True)
    table = append_results(rows.to_dict("records"), out / "results.csv")
    if per_class:
        cells = pd.concat([pd.read_csv(pair_file(out, m, d, "per_class")) for m in models for d in datasets],
                          ignore_index=True)
        append_results(cells.to_dict("records"), out / "per_class.csv", keys=("model", "dataset", "class_id"))
    return table


# --- one decode, many models --------------------------------------------------------------------------------------

class MultiTransform:
    """Every preprocessing of one decoded image: a PIL image in, one tensor per transform out (None: the
    uint8 image as decoded, as :class:`SuiteDataset` gives it)."""

    def __init__(self, transforms: Sequence[Callable | None]):
        self.transforms = [t if t is not None else pil_to_tensor for t in transforms]

    def __call__(self, image) -> tuple[torch.Tensor, ...]:
        return tuple(transform(image) for transform in self.transforms)


def _collate(batch: list) -> tuple[list[torch.Tensor] | None, torch.Tensor, torch.Tensor, list[int]]:
    """As :func:`~clipshift.data.imagenet.suite_collate`, with one stacked batch per transform."""
    kept = [item for item in batch if item[0] is not None]
    skipped = [int(item[2]) for item in batch if item[0] is None]
    images = [torch.stack([item[0][g] for item in kept]) for g in range(len(kept[0][0]))] if kept else None
    targets = torch.tensor([int(item[1]) for item in kept], dtype=torch.int64)
    indices = torch.tensor([int(item[2]) for item in kept], dtype=torch.int64)
    return images, targets, indices, skipped


@torch.inference_mode()
def encode_together(models: Sequence[EvalModel], suite: EvalSuite, *, batch_size: int = 256, workers: int = 4,
                    device: torch.device | None = None, strict: bool = False, amp: bool = True,
                    progress: bool = True) -> list[Features]:
    """Every model's :class:`Features` of `suite` from one decode of its images (see the module doc):
    the same batches, transforms and encoding as :func:`~clipshift.evaluate.loop.encode` of each model
    alone; sharded and gathered under ``torchrun`` as it is."""
    device = device or default_device()
    rank, size = world()
    transforms = {m.preprocess_id: m.preprocess for m in models}
    group = {key: g for g, key in enumerate(transforms)}
    dataset = SuiteDataset(suite, MultiTransform(list(transforms.values())), strict=strict)
    shard = Subset(dataset, range(rank, len(dataset), size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    for model in models:
        model.to(device).eval()
    feats: list[list[torch.Tensor]] = [[] for _ in models]
    targets, indices, skipped = [], [], []
    with progress_bar(total=len(shard), desc=f"{suite.name} ({len(models)} models, {len(transforms)} transforms)",
                      unit="img", enabled=progress and rank == 0) as bar:
        for images, batch_targets, batch_indices, batch_skipped in loader:
            skipped += batch_skipped
            if images is not None:
                for k, model in enumerate(models):
                    feats[k].append(encode_batch(model, images[group[model.preprocess_id]], device, amp))
                targets.append(batch_targets)
                indices.append(batch_indices)
            bar.update(len(batch_targets) + len(batch_skipped))
    out = [gather_features(*join_shard(f, targets, indices, list(skipped))) for f in feats]
    check_decoded(suite, out[0])
    return out


def _features(models: Sequence[EvalModel], name: str, suite: EvalSuite, options: ManyOptions) -> list[Features]:
    """Each model's features of `suite`: from the cache where there, the others from one decode."""
    paths = [feature_cache_path(m, suite, name, options.cache_dir, options.strict) for m in models]
    found = [cached_features(path) for path in paths]
    missing = [k for k, f in enumerate(found) if f is None]
    if missing:
        encoded = encode_together([models[k] for k in missing], suite, batch_size=options.batch_size,
                                  workers=options.workers, device=options.device, strict=options.strict,
                                  amp=options.amp, progress=options.progress)
        for k, features in zip(missing, encoded):
            store_features(paths[k], features, models[k], name)
            found[k] = features
        if world()[1] > 1:
            dist.barrier()
    return found


def _score_pair(model: EvalModel, scoring: Scoring, name: str, suite: EvalSuite, features: Features, out: Path,
                options: ManyOptions, log: Callable, record: dict) -> None:
    per_class = [] if options.per_class else None
    predictions = [] if options.save_predictions or options.keep_logits else None
    rows = evaluate_model(model, {name: suite}, scoring=scoring, features={name: features}, device=options.device,
                          progress=False, extra=options.extra, per_class=per_class, predictions=predictions,
                          keep_logits=options.keep_logits)
    if world()[0] == 0:
        _write_pair(out, model, name, rows, per_class, predictions, record)
        top1 = next(r for r in rows if r["metric"] == "top1")
        skipped = f", {top1['images_skipped']} undecodable images skipped" if top1["images_skipped"] else ""
        log(f"{model.name} on {name}: top-1 {100 * top1['value']:.2f}% ({top1['num_examples']} images{skipped})")


def _run_chunk(chunk: Sequence[ModelEntry], todo: Mapping[str, list[str]], suites: Mapping[str, EvalSuite],
               out: Path, options: ManyOptions, log: Callable) -> None:
    """Load a chunk of models, then pass over each dataset once for those of them that still need it."""
    models, scorings, records = {}, {}, {}
    with progress_bar(total=len(chunk), desc="loading models", unit="model",
                      enabled=options.progress and world()[0] == 0) as bar:
        for entry in chunk:
            records[entry.id] = _weights_record(entry, options.amp)  # digests memoised: load reads none again
            models[entry.id] = entry.load()
            scorings[entry.id] = model_scoring(models[entry.id], list(suites.values()), templates=options.templates,
                                               class_names=options.class_names, cache_dir=options.cache_dir,
                                               device=options.device, progress=options.progress)
            bar.update(1)
    for name, suite in suites.items():
        ids = [i for i in models if name in todo[i]]
        if ids:
            features = _features([models[i] for i in ids], name, suite, options)
            for i, feats in zip(ids, features):
                _score_pair(models[i], scorings[i], name, suite, feats, out, options, log, records[i])
    models.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _todo(entries: Sequence[ModelEntry], suites: Mapping[str, EvalSuite], out: Path, options: ManyOptions,
          log: Callable) -> dict[str, list[str]]:
    """Each model's datasets still to score; a line for those skipped, one for each reason to rescore."""
    todo = {}
    for entry in entries:
        states = {d: _pair_state(out, entry, d, options) for d in suites}
        todo[entry.id] = [d for d, state in states.items() if state != "done"]
        for state in dict.fromkeys(s for s in states.values() if s is not None):
            datasets = ", ".join(d for d, s in states.items() if s == state)
            if world()[0] == 0:
                what = "already scored, skipped" if state == "done" else f"{state}, rescoring"
                log(f"{what}: {entry.id} on {datasets}")
    return todo


def evaluate_models(entries: Sequence[ModelEntry], suites: Mapping[str, EvalSuite], out,
                    options: ManyOptions | None = None, *, only: str | None = None,
                    log: Callable[[str], None] = print) -> pd.DataFrame | None:
    """Score every model of `entries` on every suite (by the dataset name its rows get), writing each
    pair's files as it finishes and skipping pairs already written (see the module doc); returns the
    long results table, also written to ``OUT/results.csv``. `only`: score the model with this id alone
    and write its pair files only (a line of ``--plan``); returns None."""
    options = options or ManyOptions()
    out = Path(out)
    if options.models_at_once < 1:
        raise ValueError(f"--models-at-once must be at least 1, got {options.models_at_once}")
    if only is not None:
        chosen = [e for e in entries if e.id == only]
        if not chosen:
            raise ValueError(f"--only {only!r}: no model of the list has this id (ids: "
                             f"{', '.join(e.id for e in entries[:5])}{', ...' if len(entries) > 5 else ''})")
        entries = chosen
    _check_settings(out, suites, options)
    todo = _todo(entries, suites, out, options, log)
    pending = [e for e in entries if todo[e.id]]
    for start in range(0, len(pending), options.models_at_once):
        _run_chunk(pending[start:start + options.models_at_once], todo, suites, out, options, log)
    if only is not None or world()[0] != 0:
        return None
    return build_tables(out, [e.id for e in entries], list(suites), per_class=options.per_class)
