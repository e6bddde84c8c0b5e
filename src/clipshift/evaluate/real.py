"""Evaluate real models (open_clip, timm, this package's checkpoints) on ImageNet and its natural
shifts, with caches for image features and zero-shot heads, and ``torchrun`` sharding.

One call per model: :func:`evaluate_model` → rows of the long results table
(``model,dataset,metric,value,num_examples,images_skipped,...``) that ``clipshift er`` reads.

Caches (under `cache_dir`):
- ``features/<key>.safetensors``: image embeddings (CLIP) or logits (classifiers) of one dataset,
  keyed by the model's weights, the dataset (root, images and targets) and the transform, so
  re-scoring with other templates never re-encodes images;
- ``heads/<key>.safetensors``: zero-shot heads, keyed by weights, class names and templates.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Subset

from .._progress import progress_bar
from .per_class import per_class_accuracy
from ..data.imagenet import EvalSuite, SuiteDataset, score, suite_collate
from ..distributed import default_device, world
from ..models.factory import atomic_write_text, save_safetensors_atomic
from ..models.load import EvalModel

METRICS = ("top1", "top5", "mean_per_class_recall")
CACHE_VERSION = 1


# --- templates and class names ---------------------------------------------------------------------------------

def imagenet_class_names() -> list[str]:
    """open_clip's short ImageNet-1k class names for prompts, in the standard class order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def resolve_templates(spec: str | None = None) -> list[str]:
    """Prompt templates with a ``{}`` for the class name: ``openai`` (the 80 of Radford et al.,
    default), ``simple`` (open_clip's short set), or a text file with one template per line."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    spec = spec or "openai"
    if spec in ("openai", "simple"):
        raw = OPENAI_IMAGENET_TEMPLATES if spec == "openai" else SIMPLE_IMAGENET_TEMPLATES
        return [t("{}") if callable(t) else str(t) for t in raw]
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"--templates {spec!r}: not 'openai' or 'simple', and no such file")
    templates = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise ValueError(f"{path}: every template needs a '{{}}' for the class name; "
                         + (f"these do not: {bad[:3]}" if bad else "the file has none"))
    return templates


# --- caches ----------------------------------------------------------------------------------------------------

def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _suite_fingerprint(suite: EvalSuite) -> str:
    digest = hashlib.sha256()
    for path, target in suite.samples:
        digest.update(f"{path}\t{target}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class Features:
    """Encoded images of one dataset: ``features`` (N, D) float32 (embeddings or logits),
    ``targets`` (N,), ``indices`` (N,) into ``suite.samples``, ``skipped`` (sample indices not decodable)."""

    features: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    skipped: list[int]
    cached: bool = False


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return nullcontext()


@torch.inference_mode()
def _encode_shard(model: EvalModel, suite: EvalSuite, *, batch_size: int, workers: int, device: torch.device,
                  strict: bool, amp: bool, progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    rank, size = world()
    dataset = SuiteDataset(suite, model.preprocess, strict=strict)
    shard = Subset(dataset, range(rank, len(dataset), size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=suite_collate,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    feats, targets, indices, skipped = [], [], [], []
    with progress_bar(total=len(shard), desc=f"{suite.name} ({model.name})", unit="img",
                      enabled=progress and rank == 0) as bar:
        for images, batch_targets, batch_indices, batch_skipped in loader:
            skipped += list(batch_skipped)
            if images is not None:
                images = images.to(device, non_blocking=True)
                if device.type == "cuda" and images.dim() == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp):
                    out = model.encode(images)
                feats.append(out.float().cpu())
                targets.append(batch_targets)
                indices.append(batch_indices)
            bar.update(len(batch_targets) + len(batch_skipped))
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped
    return torch.cat(feats), torch.cat(targets).long(), torch.cat(indices).long(), skipped


def encode_suite(model: EvalModel, suite: EvalSuite, *, cache_dir=None, batch_size: int = 256, workers: int = 4,
                 device: torch.device | None = None, strict: bool = False, amp: bool = True,
                 progress: bool = True) -> Features:
    """Image embeddings (CLIP) or logits (classifier) of every decodable image of `suite`, in
    sample order; read from the cache when present. Under ``torchrun`` each rank encodes every
    world-size-th image and the shards are gathered on every rank (same result as one process)."""
    device = device or default_device()
    key = _key({"v": CACHE_VERSION, "weights": model.weights_id, "kind": model.kind, "dataset": suite.name,
                "root": str(Path(suite.root).resolve()), "samples": _suite_fingerprint(suite),
                "transform": model.preprocess_id, "crop_border": suite.crop_border, "strict": strict})
    path = Path(cache_dir) / "features" / f"{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        data = load_file(str(path))
        return Features(data["features"], data["targets"], data["indices"], data["skipped"].tolist(), cached=True)
    model.to(device)
    feats, targets, indices, skipped = _encode_shard(model, suite, batch_size=batch_size, workers=workers,
                                                     device=device, strict=strict, amp=amp, progress=progress)
    rank, size = world()
    if size > 1:
        gathered = [None] * size
        dist.all_gather_object(gathered, (feats, targets, indices, skipped))
        parts = [g for g in gathered if g[0].numel()]
        feats = torch.cat([g[0] for g in parts]) if parts else feats
        targets = torch.cat([g[1] for g in parts]) if parts else targets
        indices = torch.cat([g[2] for g in parts]) if parts else indices
        skipped = sorted(s for g in gathered for s in g[3])
    order = torch.argsort(indices)
    result = Features(feats[order], targets[order], indices[order], sorted(skipped))
    if len(result.indices) == 0:
        raise ValueError(f"{suite.name}: none of the {len(suite)} images under {suite.root} could be decoded")
    if path is not None and rank == 0:
        save_safetensors_atomic({"features": result.features, "targets": result.targets, "indices": result.indices,
                      "skipped": torch.tensor(result.skipped, dtype=torch.long)}, path,
                     {"model": model.name, "dataset": suite.name, "root": str(suite.root)})
    if size > 1:
        dist.barrier()
    return result


@torch.inference_mode()
def zero_shot_head(model: EvalModel, class_names: Sequence[str], templates: Sequence[str], *, cache_dir=None,
                   device: torch.device | None = None, classes_per_batch: int = 10, progress: bool = True
                   ) -> torch.Tensor:
    """(D, C) zero-shot head: per class, the mean of its normalised prompt embeddings,
    re-normalised (prompt ensembling), built with open_clip's ``build_zero_shot_classifier``
    and cached by weights, class names and templates."""
    from open_clip import build_zero_shot_classifier

    if model.kind != "clip" or model.tokenizer is None:
        raise ValueError(f"{model.name} is a {model.kind}, not a CLIP model: it has no text tower for a zero-shot head")
    key = _key({"v": CACHE_VERSION, "weights": model.weights_id, "names": list(class_names),
                "templates": list(templates)})
    path = Path(cache_dir) / "heads" / f"{key}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        return load_file(str(path))["head"]
    device = device or default_device()
    model.to(device)
    rank, _ = world()
    head = build_zero_shot_classifier(model.module, model.tokenizer, list(class_names), list(templates),
                                      num_classes_per_batch=classes_per_batch, device=device,
                                      use_tqdm=progress and rank == 0).float().cpu()
    if path is not None and rank == 0:
        save_safetensors_atomic({"head": head}, path, {"model": model.name, "classes": str(len(class_names)),
                                            "templates": str(len(templates))})
    return head


# --- evaluation ------------------------------------------------------------------------------------------------

def logits_for(model: EvalModel, features: Features, head: torch.Tensor | None) -> torch.Tensor:
    """(N, C) scores: cosine similarity to the zero-shot head (CLIP) or the classifier's logits."""
    if model.kind == "clip":
        return F.normalize(features.features, dim=-1) @ head
    return features.features


def evaluate_model(model: EvalModel, suites: Sequence[EvalSuite], *, templates: Sequence[str] | None = None,
                   class_names: Sequence[str] | None = None, cache_dir=None, batch_size: int = 256,
                   workers: int = 4, device: torch.device | None = None, strict: bool = False, amp: bool = True,
                   progress: bool = True, extra: dict | None = None, per_class: list | None = None) -> list[dict]:
    """Rows of the long results table for `model` on every suite: top1, top5 and mean per-class
    recall, with ``num_examples`` (images scored) and ``images_skipped`` (undecodable).

    `per_class`: a list that receives the per-class rows (``per_class.PER_CLASS_COLUMNS``) of every
    suite, scored as top1 is; None: not computed."""
    device = device or default_device()
    head, template_tag = None, None
    if model.kind == "clip":
        templates = list(templates) if templates is not None else resolve_templates("openai")
        class_names = list(class_names) if class_names is not None else imagenet_class_names()
        head = zero_shot_head(model, class_names, templates, cache_dir=cache_dir, device=device, progress=progress)
        template_tag = f"{len(templates)} templates"
    rows = []
    for suite in suites:
        if model.kind == "classifier":
            n_out = len(model.class_names) if model.class_names else None
            if n_out is not None and n_out != suite.num_classes:
                raise ValueError(f"{model.name} classifies {n_out} classes; {suite.name} needs a "
                                 f"{suite.num_classes}-way ImageNet classifier")
        feats = encode_suite(model, suite, cache_dir=cache_dir, batch_size=batch_size, workers=workers,
                             device=device, strict=strict, amp=amp, progress=progress)
        logits = logits_for(model, feats, head)
        if logits.shape[1] != suite.num_classes:
            raise ValueError(f"{model.name} gives {logits.shape[1]} scores per image; {suite.name} needs "
                             f"{suite.num_classes} (the ImageNet-1k label space)")
        metrics = score(logits, feats.targets, suite)
        if per_class is not None:
            names = class_names if class_names is not None else model.class_names
            if names is None and suite.num_classes == 1000:
                names = imagenet_class_names()
            table = per_class_accuracy(logits, feats.targets, suite, names)
            per_class += [{"model": model.name, "dataset": suite.name, **row} for row in table.to_dict("records")]
        for metric in METRICS:
            rows.append({"model": model.name, "dataset": suite.name, "metric": metric, "value": metrics[metric],
                         "num_examples": metrics["num_examples"], "images_skipped": len(feats.skipped),
                         "kind": model.kind, "templates": template_tag, **model.metadata, **(extra or {})})
    return rows


def append_results(rows: list[dict], path, keys: Sequence[str] = ("model", "dataset", "metric")) -> pd.DataFrame:
    """Add `rows` to the long results table at `path` (created if missing); a row with the same
    `keys` (default model, dataset, metric) already there is replaced. Written atomically; returns
    the whole table."""
    path = Path(path)
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        seen = set(zip(*(new[k].astype(str) for k in keys)))  # as text: a class id "7" reads back as 7
        old = old[[k not in seen for k in zip(*(old[k].astype(str) for k in keys))]]
        new = pd.concat([old, new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new.to_csv(index=False))
    return new
