"""The one evaluation loop: encode each dataset once (cached), score it with every head.

    model = load_model("runs/quickstart/checkpoints/contrastive_narrow")      # or EvalModel.wrap(module, "clip")
    heads = {"ensemble": build_head(HeadSpec("zeroshot", templates), model, class_names=names)}
    scores = evaluate(model, {"test": suite_or_tensors, "sketch": ...}, heads, cache_dir="cache")

A dataset is an :class:`~clipshift.data.imagenet.EvalSuite` (image files decoded by the model's
``preprocess`` in DataLoader workers, sharded under ``torchrun``) or :class:`ImageTensors` (uint8
images already in memory, for this package's models). Features are cached under
``cache_dir/features/<key>.safetensors``, keyed by the weights, the dataset (root, files and
targets, or the tensors' digest) and the transform, so re-scoring with other heads never re-encodes.
Scores use :func:`clipshift.data.imagenet.score` (class masking for subset suites, several correct
classes per target for ObjectNet) and, optionally, per-class accuracy and per-image predictions
(:mod:`.predictions`); each score carries its protocol stamp (:mod:`.protocol`).
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Subset

from ..progress import progress_bar
from ..data.imagenet import EvalSuite, SuiteDataset, score, suite_collate
from ..distributed import default_device, world
from ..models.factory import save_safetensors_atomic
from ..models.interface import EvalModel
from .heads import CACHE_VERSION, cache_key
from .per_class import per_class_accuracy
from .predictions import image_ids, prediction_table, predictions_meta
from .protocol import protocol_stamp

METRICS = ("top1", "top5", "mean_per_class_recall")


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose highest logit is the label's (float32 mean, as :func:`score` reports top1)."""
    if len(labels) == 0:
        raise ValueError("cannot compute accuracy on an empty dataset")
    return float((logits.argmax(1) == labels).float().mean())


def tensor_digest(*tensors: torch.Tensor) -> str:
    """A short digest of tensors' shapes, dtypes and values, for cache keys."""
    h = hashlib.sha256()
    for tensor in tensors:
        h.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class ImageTensors:
    """An in-memory evaluation set: uint8 images (N, 3, H, W), class labels (N,) and, optionally, each
    image's id (the file it was read from, for per-image predictions; not part of the digest)."""

    images: torch.Tensor
    targets: torch.Tensor
    ids: list[str] | None = None

    def __post_init__(self):
        if not torch.is_tensor(self.images) or self.images.dim() != 4:
            raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(self.images, 'shape', self.images)}")
        self.targets = torch.as_tensor(self.targets).long()
        if self.targets.shape != (len(self.images),):
            raise ValueError(f"{len(self.images)} images but targets of shape {tuple(self.targets.shape)}")
        if self.ids is not None and len(self.ids) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.ids)} ids")

    def __len__(self) -> int:
        return len(self.images)

    def digest(self) -> str:
        return tensor_digest(self.images, self.targets)

    def as_suite(self, name: str, num_classes: int) -> EvalSuite:
        """A suite over `num_classes` classes, one per target, for :func:`score`."""
        return EvalSuite(name=name, root=Path("<memory>"), samples=[], target_classes=[(c,) for c in range(num_classes)],
                         target_names=[str(c) for c in range(num_classes)], class_indices=None, num_classes=num_classes)


@dataclass
class Features:
    """Encoded images of one dataset: ``features`` (N, D) float32, ``targets`` (N,), ``indices`` (N,)
    into the dataset's samples, ``skipped`` (sample indices that could not be decoded)."""

    features: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor
    skipped: list[int]
    cached: bool = False


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    return nullcontext()


def _suite_fingerprint(suite: EvalSuite) -> str:
    """The samples (paths, targets) and each file's size and modification time: an image rewritten
    under the same name is a different dataset (a stat per file, no reading)."""
    digest = hashlib.sha256()
    for path, target in suite.samples:
        try:
            stat = os.stat(path)
            version = f"{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            version = "missing"
        digest.update(f"{path}\t{target}\t{version}\n".encode())
    return digest.hexdigest()[:16]


def dataset_fingerprint(data) -> str:
    """What an evaluation set holds, for keeping scores: ImageTensors' digest of every pixel and target;
    an EvalSuite's name, root, samples and each file's size and modification time."""
    return data.digest() if isinstance(data, ImageTensors) else cache_key(_suite_key(data))


def _suite_key(suite: EvalSuite) -> dict:
    return {"dataset": suite.name, "root": str(Path(suite.root).resolve()), "samples": _suite_fingerprint(suite),
            "crop_border": suite.crop_border}


def feature_cache_path(model: EvalModel, data, name: str, cache_dir, strict: bool) -> Path | None:
    """Where `model`'s features of `data` (named `name`) are cached under `cache_dir` (None: no cache)."""
    if cache_dir is None:
        return None
    if isinstance(data, ImageTensors):
        dataset = {"dataset": name, "tensors": data.digest()}
    else:
        dataset = {**_suite_key(data), "strict": strict}
    key = cache_key({"v": CACHE_VERSION, "weights": model.weights_id, "kind": model.kind,
                     "transform": model.preprocess_id if not isinstance(data, ImageTensors) else "uint8 tensors",
                     **dataset})
    return Path(cache_dir) / "features" / f"{key}.safetensors"


@torch.inference_mode()
def _encode_tensors(model: EvalModel, data: ImageTensors, batch_size: int, device: torch.device, progress: bool,
                    desc: str) -> Features:
    model.module.eval()
    out = []
    with progress_bar(total=len(data), desc=desc, unit="img", enabled=progress) as bar:
        for start in range(0, len(data), batch_size):
            out.append(model.encode_image(data.images[start:start + batch_size].to(device)).float().cpu())
            bar.update(min(batch_size, len(data) - start))
    return Features(torch.cat(out), data.targets, torch.arange(len(data)), [])


def encode_batch(model: EvalModel, images: torch.Tensor, device: torch.device, amp: bool) -> torch.Tensor:
    """Features (float32, on the CPU) of one preprocessed batch: on `device` (channels-last on a GPU),
    under autocast when `amp`; the one way every decoded batch is encoded."""
    images = images.to(device, non_blocking=True)
    if device.type == "cuda" and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    with _autocast(device, amp):
        out = model.encode_image(images)
    return out.float().cpu()


@torch.inference_mode()
def _encode_shard(model: EvalModel, suite: EvalSuite, *, batch_size: int, workers: int, device: torch.device,
                  strict: bool, amp: bool, progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    rank, size = world()
    dataset = SuiteDataset(suite, model.preprocess, strict=strict)
    shard = Subset(dataset, range(rank, len(dataset), size))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=workers, collate_fn=suite_collate,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    feats, targets, indices, skipped = [], [], [], []
    model.module.eval()
    with progress_bar(total=len(shard), desc=f"{suite.name} ({model.name})", unit="img",
                      enabled=progress and rank == 0) as bar:
        for images, batch_targets, batch_indices, batch_skipped in loader:
            skipped += list(batch_skipped)
            if images is not None:
                feats.append(encode_batch(model, images, device, amp))
                targets.append(batch_targets)
                indices.append(batch_indices)
            bar.update(len(batch_targets) + len(batch_skipped))
    return join_shard(feats, targets, indices, skipped)


def join_shard(feats: list, targets: list, indices: list, skipped: list) -> tuple:
    """One process's batches of features, targets and sample indices as three tensors, with the
    skipped sample indices (empty tensors when no image was decoded)."""
    if not feats:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped
    return torch.cat(feats), torch.cat(targets).long(), torch.cat(indices).long(), skipped


def gather_features(feats, targets, indices, skipped) -> Features:
    """Every process's shard of a suite's features as one :class:`Features` in sample order (the shard
    itself outside ``torchrun``)."""
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
    return Features(feats[order], targets[order], indices[order], sorted(skipped))


def encode(model: EvalModel, data, *, name: str = "data", cache_dir=None, batch_size: int | None = None,
           workers: int = 4, device: torch.device | None = None, strict: bool = False, amp: bool = True,
           progress: bool = True) -> Features:
    """Image features of every decodable image of `data` (an EvalSuite or ImageTensors), in sample
    order; read from the cache when present. Under ``torchrun`` each rank encodes every
    world-size-th image of a suite and the shards are gathered on every rank."""
    if not isinstance(model, EvalModel):
        raise TypeError(f"evaluate a model through EvalModel (load_model or EvalModel.wrap), got {type(model).__name__}")
    device = device or default_device()
    path = feature_cache_path(model, data, name, cache_dir, strict)
    if (stored := cached_features(path)) is not None:
        return stored
    model.to(device)
    rank, size = world()
    if isinstance(data, ImageTensors):
        result = _encode_tensors(model, data, batch_size or 1024, device, progress and rank == 0,
                                 f"{name} ({model.name})")
    elif isinstance(data, EvalSuite):
        result = gather_features(*_encode_shard(model, data, batch_size=batch_size or 256, workers=workers,
                                                device=device, strict=strict, amp=amp, progress=progress))
        check_decoded(data, result)
    else:
        raise TypeError(f"{name}: a dataset is an EvalSuite or ImageTensors, got {type(data).__name__}")
    store_features(path, result, model, name)
    if size > 1 and isinstance(data, EvalSuite):
        dist.barrier()
    return result


def check_decoded(suite: EvalSuite, result: Features) -> None:
    """ValueError when not one image of `suite` could be decoded."""
    if len(result.indices) == 0:
        raise ValueError(f"{suite.name}: none of the {len(suite)} images under {suite.root} could be decoded")


def cached_features(path: Path | None) -> Features | None:
    """The features cached at `path` (from :func:`feature_cache_path`), None when not cached."""
    if path is None or not path.exists():
        return None
    stored = load_file(str(path))
    return Features(stored["features"], stored["targets"], stored["indices"], stored["skipped"].tolist(), cached=True)


def store_features(path: Path | None, result: Features, model: EvalModel, name: str) -> None:
    """Cache `result` at `path` (rank 0 only; nothing when `path` is None)."""
    if path is not None and world()[0] == 0:
        save_safetensors_atomic({"features": result.features, "targets": result.targets, "indices": result.indices,
                                 "skipped": torch.tensor(result.skipped, dtype=torch.long)}, path,
                                {"model": model.name, "dataset": name})


def evaluate(model: EvalModel, datasets: Mapping[str, object], heads: Mapping[str, Callable], *, cache_dir=None,
             batch_size: int | None = None, workers: int = 4, device: torch.device | None = None,
             strict: bool = False, amp: bool = True, progress: bool = True,
             per_class: list | None = None, class_names: Sequence[str] | None = None,
             predictions: list | None = None, keep_logits: bool = False,
             features: Mapping[str, Features] | None = None) -> list[dict]:
    """Score `model` with every head on every dataset: one dict per (dataset, head) with ``dataset``,
    ``head``, the :data:`METRICS`, ``num_examples`` (images scored), ``images_skipped`` and ``protocol``
    (how it was scored: :func:`.protocol.protocol_stamp`; `class_names`: the label space's names).

    `per_class`: a list receiving per-class rows (``dataset, head, class, top1, num_examples,
    class_id``) named by `class_names`. `predictions`: a list receiving one record per (dataset, head),
    ``{"dataset", "head", "table", "meta"}``, the per-image predictions to write with
    :func:`.predictions.write_predictions` (`keep_logits`: with every scored class's score).
    `features`: a dataset's features already encoded (by name), used instead of encoding it."""
    scores = []
    for name, data in datasets.items():
        feats = (features or {}).get(name) or encode(model, data, name=name, cache_dir=cache_dir,
                                                     batch_size=batch_size, workers=workers, device=device,
                                                     strict=strict, amp=amp, progress=progress)
        for head_name, head in heads.items():
            logits = head(feats.features).float()
            suite = data.as_suite(name, logits.shape[1]) if isinstance(data, ImageTensors) else data
            if logits.shape[1] != suite.num_classes:
                raise ValueError(f"{model.name} ({head_name}) gives {logits.shape[1]} scores per image; {name} "
                                 f"needs {suite.num_classes}")
            metrics = score(logits, feats.targets, suite)
            stamp = protocol_stamp(model, data, suite, head, class_names)
            scores.append({"dataset": name, "head": head_name, **{m: metrics[m] for m in METRICS},
                           "num_examples": metrics["num_examples"], "images_skipped": len(feats.skipped),
                           "protocol": stamp})
            if predictions is not None:
                predictions.append(_prediction_record(name, head_name, logits, feats, data, suite, class_names,
                                                      stamp, keep_logits))
            if per_class is not None:
                table = per_class_accuracy(logits, feats.targets, suite, class_names)
                per_class += [{"dataset": name, "head": head_name, **row} for row in table.to_dict("records")]
    return scores


def _prediction_record(name: str, head: str, logits, feats: Features, data, suite: EvalSuite, class_names, stamp,
                       keep_logits: bool) -> dict:
    indices = feats.indices.tolist()
    table = prediction_table(logits, feats.targets, suite, image_ids(data, indices), indices, keep_logits)
    meta = predictions_meta(dataset=name, head=head, suite=suite, class_names=class_names, images=len(data),
                            skipped_ids=image_ids(data, feats.skipped), protocol=stamp)
    return {"dataset": name, "head": head, "table": table, "meta": meta}
