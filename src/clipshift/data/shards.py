"""Streaming training data from webdataset shards (open_clip, DataComp and img2dataset output).

A shard is a ``.tar`` whose members share keys: ``KEY.jpg`` (or ``.jpeg``/``.png``/``.webp``),
``KEY.txt`` (caption), optionally ``KEY.cls`` (integer label) and ``KEY.json``. Shards are given as
brace patterns (``data/{00000..00127}.tar``). Several sources mix by weight; a stream has no
length, so the epoch length (samples per epoch) is stated.

:class:`ShardStream` is deterministic for a seed: each source's shards are shuffled on every pass
and samples go through a seeded shuffle buffer; the mixture draws its source per sample from a
seeded generator. Only raw bytes travel through the stream; images are decoded (and resized) when
a batch is taken, and under ``torchrun`` each rank decodes only its own rows. Resuming at step
``s`` fast-forwards the raw stream by ``s × batch`` samples without decoding them.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ._images import DECODE_ERRORS

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


def expand_shards(pattern: str) -> list[str]:
    """The shard paths of a brace pattern (``dir/{000..009}.tar``; several patterns joined by ``::``)."""
    import braceexpand

    paths = [p for part in pattern.split("::") for p in braceexpand.braceexpand(part)]
    missing = [p for p in paths if not Path(p).is_file()]
    if len(missing) == len(paths):
        raise FileNotFoundError(f"shard pattern {pattern!r} matches no file (expected webdataset .tar shards, "
                                f"e.g. {paths[0]})")
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} shards of {pattern!r} not found, e.g. {missing[:3]}")
    return paths


def _raw_samples(shards: Sequence[str]) -> Iterator[dict]:
    """Samples of the shards in the given order: dicts of member suffix → bytes, plus ``__key__``."""
    import tarfile

    for shard in shards:
        current, sample = None, {}
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                name = Path(member.name)
                key, suffix = str(name.parent / name.name.split(".", 1)[0]), name.name.split(".", 1)[-1].lower()
                if key != current:
                    if sample:
                        yield sample
                    current, sample = key, {"__key__": key, "__shard__": shard}
                sample[suffix] = archive.extractfile(member).read()
        if sample:
            yield sample


class _Source:
    """One weighted source: its shards cycled forever, reshuffled every pass, through a shuffle buffer."""

    def __init__(self, shards: list[str], rng: random.Random, buffer: int):
        self.shards, self.rng, self.buffer = shards, rng, buffer
        self.iterator = self._cycle()

    def _cycle(self) -> Iterator[dict]:
        pool: list[dict] = []
        while True:
            order = list(self.shards)
            self.rng.shuffle(order)
            produced = False
            for sample in _raw_samples(order):
                produced = True
                if len(pool) < self.buffer:
                    pool.append(sample)
                    continue
                i = self.rng.randrange(len(pool))
                yield pool[i]
                pool[i] = sample
            if not produced and not pool:
                raise ValueError(f"shards {self.shards[:3]} hold no samples")
            if not produced:
                while pool:
                    yield pool.pop(self.rng.randrange(len(pool)))

    def __next__(self) -> dict:
        return next(self.iterator)


class ShardStream:
    """An endless, seeded mixture of webdataset sources: ``next_batch(n)`` gives n raw samples."""

    def __init__(self, patterns: Sequence[str], weights: Sequence[float] | None = None, seed: int = 0,
                 buffer: int = 1000):
        if not patterns:
            raise ValueError("need at least one shard pattern")
        weights = np.asarray(weights if weights is not None else [1.0] * len(patterns), dtype=float)
        if len(weights) != len(patterns) or (weights <= 0).any():
            raise ValueError(f"weights must be one positive number per source, got {list(weights)}")
        self.probabilities = weights / weights.sum()
        self.sources = [_Source(expand_shards(p), random.Random(seed * 7919 + i), buffer)
                        for i, p in enumerate(patterns)]
        self.choice = np.random.default_rng(seed)
        self.position = 0  # samples drawn so far

    def next_batch(self, n: int) -> list[dict]:
        picks = self.choice.choice(len(self.sources), size=n, p=self.probabilities)
        self.position += n
        return [{**next(self.sources[i]), "__source__": int(i)} for i in picks]

    def skip(self, n: int) -> None:
        """Advance by `n` samples without decoding them (resume)."""
        while n > 0:
            step = min(n, 4096)
            self.next_batch(step)
            n -= step


def decode_sample(sample: dict, size: int) -> tuple[torch.Tensor | None, str, int]:
    """(uint8 (3, size, size) image or None if undecodable, caption, label or -1)."""
    image = None
    for key in IMAGE_KEYS:
        if key in sample:
            try:
                with Image.open(io.BytesIO(sample[key])) as raw:
                    rgb = raw.convert("RGB")
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.BILINEAR)
                image = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
            except DECODE_ERRORS:
                image = None
            break
    caption = sample.get("txt", b"").decode("utf-8", errors="replace").strip()
    label = int(sample["cls"].decode().strip()) if "cls" in sample else -1
    return image, caption, label


class StreamingData:
    """Training data that streams from shards, for the loop of :mod:`clipshift.train.loop`.

    ``len()`` is the stated epoch length. The loop asks for rows of global batch ``g``; the stream
    produces each global batch once (fast-forwarding when a resumed run starts later), and
    ``batch(rows)`` decodes only the requested rows. Fields: ``images``; ``tokens`` (with a
    `tokenizer`, for contrastive); ``labels`` (``.cls`` members, or with a `labeller` the class the
    caption names; samples without a label are passed over and counted in ``passed_over``)."""

    streaming = True

    def __init__(self, stream: ShardStream, samples_per_epoch: int, batch_size: int, image_size: int, *,
                 tokenizer: Callable | None = None, labeller: Callable[[list[str]], np.ndarray] | None = None,
                 need_labels: bool = False):
        if samples_per_epoch < batch_size:
            raise ValueError(f"samples per epoch ({samples_per_epoch}) must be at least one batch ({batch_size})")
        self.stream, self.samples, self.batch_size, self.size = stream, samples_per_epoch, batch_size, image_size
        self.tokenizer, self.labeller, self.need_labels = tokenizer, labeller, need_labels
        self.steps_per_epoch = samples_per_epoch // batch_size
        self.current, self.raw = -1, []
        self.labels = torch.zeros(0) if need_labels else None
        self.tokens = torch.zeros(0) if tokenizer is not None else None
        self.images = None
        self.skipped = 0  # undecodable images (replaced by blank images so that batches keep their size)
        self.passed_over = 0  # streamed samples without a label, when labels are needed

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def fetch(self, global_step: int) -> None:
        """Make global batch `global_step` the current one (fast-forwarding past earlier ones)."""
        if global_step < self.current:
            raise ValueError(f"stream cannot go back from batch {self.current} to {global_step}")
        while self.current < global_step:
            self.raw = self._pull()
            self.current += 1

    def _pull(self) -> list[dict]:
        """The next global batch of raw samples. With labels needed, a sample's label is its ``.cls``
        member, or with a `labeller` the class its caption names (text matching); samples without
        one are passed over, deterministically."""
        if not self.need_labels:
            return self.stream.next_batch(self.batch_size)
        kept: list[dict] = []
        while len(kept) < self.batch_size:
            for sample in self.stream.next_batch(self.batch_size - len(kept)):
                if self.labeller is not None:  # text-matched labels replace any .cls member
                    caption = sample.get("txt", b"").decode("utf-8", errors="replace").strip()
                    label = int(self.labeller([caption])[0])
                    sample = {k: v for k, v in sample.items() if k != "cls"}
                    if label >= 0:
                        sample["cls"] = str(label).encode()
                if "cls" in sample:
                    kept.append(sample)
                else:
                    self.passed_over += 1
        return kept

    def batch(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode rows `positions` (indices into the current global batch)."""
        decoded = [decode_sample(self.raw[int(i)], self.size) for i in positions]
        blank = torch.zeros(3, self.size, self.size, dtype=torch.uint8)
        self.skipped += sum(d[0] is None for d in decoded)
        out = {"images": torch.stack([d[0] if d[0] is not None else blank for d in decoded])}
        captions = [d[1] for d in decoded]
        if self.tokenizer is not None:
            out["tokens"] = self.tokenizer(captions)
        if self.need_labels:
            out["labels"] = torch.tensor([d[2] for d in decoded], dtype=torch.long)
        return out


def write_shards(images, captions: Sequence[str], folder, *, labels=None, per_shard: int = 1000,
                 prefix: str = "") -> str:
    """Write images (uint8 (N, H, W, 3) array or (N, 3, H, W) tensor) with their captions (and
    labels) as webdataset shards ``folder/{prefix}00000.tar``, ...: ``KEY.png``, ``KEY.txt``
    [, ``KEY.cls``]. Returns the brace pattern of the shards written."""
    import tarfile
    import time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if torch.is_tensor(images):
        images = images.permute(0, 2, 3, 1).numpy()
    n = len(images)
    if len(captions) != n or (labels is not None and len(labels) != n):
        raise ValueError(f"images ({n}), captions ({len(captions)}) and labels must have the same length")
    count = (n + per_shard - 1) // per_shard
    for shard in range(count):
        path = folder / f"{prefix}{shard:05d}.tar"
        tmp = path.with_name(f".{path.name}.tmp")
        with tarfile.open(tmp, "w") as archive:
            for i in range(shard * per_shard, min(n, (shard + 1) * per_shard)):
                buffer = io.BytesIO()
                Image.fromarray(np.asarray(images[i])).save(buffer, format="PNG")
                members = {"png": buffer.getvalue(), "txt": str(captions[i]).encode()}
                if labels is not None:
                    members["cls"] = str(int(labels[i])).encode()
                for suffix, payload in members.items():
                    info = tarfile.TarInfo(f"{i:08d}.{suffix}")
                    info.size, info.mtime = len(payload), int(time.time())
                    archive.addfile(info, io.BytesIO(payload))
        tmp.replace(path)
    return str(folder / f"{prefix}{{00000..{count - 1:05d}}}.tar")


def check_shards(pattern: str, *, need_caption: bool = True, need_label: bool = False) -> list[str]:
    """The shards of `pattern`, checked before training: every shard exists, and the first sample of
    the first shard has an image (and a ``.txt`` caption / ``.cls`` label when needed). ValueError or
    FileNotFoundError naming the shard and what was expected."""
    import tarfile

    paths = expand_shards(pattern)
    try:
        sample = next(_raw_samples(paths[:1]), None)
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"{paths[0]}: not a readable tar archive ({error}); expected webdataset shards") from None
    if sample is None:
        raise ValueError(f"{paths[0]}: holds no samples (expected files KEY.jpg/.png/.webp and KEY.txt)")
    members = sorted(k for k in sample if not k.startswith("__"))
    expected = [("image", IMAGE_KEYS, True), ("caption", ("txt",), need_caption), ("label", ("cls",), need_label)]
    for what, keys, needed in expected:
        if needed and not any(k in sample for k in keys):
            raise ValueError(f"{paths[0]}: sample {sample['__key__']!r} has no {what} (members {members}; expected "
                             f"{' or '.join('KEY.' + k for k in keys)})")
    return paths
