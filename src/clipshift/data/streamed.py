"""Streamed sources (webdataset shards) as parts of a training mixture (:class:`.mixture.MixedData`).

A stream's *shard order*: its shards (the brace pattern expanded) in the order
``np.random.default_rng(subset_seed).permutation``, each shard's samples as stored. A sample whose
caption matches ``exclude_captions`` is dropped, then the class filter applies (with a class
subset, the caption must name exactly one of its classes, by text matching); ``size: N`` keeps the
first N samples left (:func:`take_stream`), so a smaller N with the same ``subset_seed`` keeps a
prefix of a larger N's take: subsets nest. Finding the take reads the headers and text members of
the shards it needs, never an image, and locates each kept sample (its shard, its image's byte
range, its caption and label): training reads only the images of its own rows, and a resumed run
starts at its step at once. Without ``size`` a stream is read whole, pass after pass, filtered as
it is read (:class:`WholeStream`).

Labels, where the objective needs them: the class the caption names (``text_match``) or the
sample's ``.cls`` member (``source``); samples without one are kept out of the passes (counted as
``kept`` but not ``labelled``). A sample without an image member is dropped like an excluded one.
"""

from __future__ import annotations

import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from .mixture import buffered_shuffle
from .shards import IMAGE_KEYS, decode_sample, expand_shards
from .sources import excluded

BUFFER = 1000  # samples a stream's shuffle buffer holds (the source's ``buffer``)


@dataclass(frozen=True)
class StreamRules:
    """What a stream keeps: ``exclude`` (a caption regex), the class filter (``subset``: text matching
    with ``match``), and the labels the objective needs (None, ``text_match`` or ``source``)."""

    exclude: str | None = None
    subset: bool = False
    labels: str | None = None
    match: Callable[[list[str]], np.ndarray] | None = None

    def judge(self, samples: Sequence[dict]) -> tuple[np.ndarray, np.ndarray | None]:
        """(kept: bool per sample, labels or None when none are needed; -1: no label)."""
        captions = [s["txt"] for s in samples]
        kept = np.array([s["image"] is not None for s in samples], dtype=bool)
        if self.exclude:
            kept &= ~excluded({"exclude_captions": self.exclude}, [""] * len(samples), captions)
        matched = self.match(captions) if self.match is not None and (self.subset or self.labels == "text_match") \
            else None
        if self.subset:
            kept &= matched >= 0
        if self.labels is None:
            return kept, None
        return kept, (matched if self.labels == "text_match" else np.array([s["cls"] for s in samples], dtype=np.int64))

    def describe(self) -> str:
        said = [w for w, on in (("not excluded by exclude_captions", self.exclude),
                                ("passing the class filter", self.subset)) if on]
        return " and ".join(said) if said else "of the stream"


def _class_index(payload: bytes, shard: str, key: str) -> int:
    try:
        return int(payload.decode().strip())
    except ValueError:
        raise ValueError(f"{shard}: sample {key!r} has a .cls member that is not an integer: {payload[:20]!r}") \
            from None


def shard_samples(path: str) -> list[dict]:
    """The samples of one shard in stored order, read from its headers and text members: ``key``,
    ``image`` (suffix, byte offset, byte count; None without one), ``txt`` (caption), ``cls`` (-1: none)."""
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"{path}: not a readable tar archive ({error}); expected webdataset shards") from None
    samples: list[dict] = []
    with archive:
        for member in archive:
            if not member.isfile():
                continue
            name = Path(member.name)
            key, suffix = str(name.parent / name.name.split(".", 1)[0]), name.name.split(".", 1)[-1].lower()
            if not samples or samples[-1]["key"] != key:
                samples.append({"key": key, "image": None, "txt": "", "cls": -1})
            sample = samples[-1]
            if suffix in IMAGE_KEYS and sample["image"] is None:
                sample["image"] = (suffix, member.offset_data, member.size)
            elif suffix == "txt":
                sample["txt"] = archive.extractfile(member).read().decode("utf-8", errors="replace").strip()
            elif suffix == "cls":
                sample["cls"] = _class_index(archive.extractfile(member).read(), path, key)
    return samples


class _Shards:
    """Reads and decodes located samples ``(shard, suffix, offset, count, caption, label)``."""

    OPEN = 16  # shards kept open at once

    def __init__(self, shards: list[str], buffer: int, image_size: int, summary: dict):
        self.shards, self.buffer, self.image_size, self.summary = shards, buffer, image_size, summary
        self.skipped = 0  # images that did not decode (blank ones take their place)
        self._open: dict[int, tarfile.TarFile] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}  # open files do not pickle

    def _bytes(self, shard: int, offset: int, count: int) -> bytes:
        if shard not in self._open:
            if len(self._open) >= self.OPEN:
                self._open.pop(next(iter(self._open))).close()
            self._open[shard] = tarfile.open(self.shards[shard], "r:*")
        handle = self._open[shard].fileobj
        handle.seek(offset)
        return handle.read(count)

    def _decode(self, located: Sequence[tuple]) -> tuple[torch.Tensor, list[str], np.ndarray]:
        blank = torch.zeros(3, self.image_size, self.image_size, dtype=torch.uint8)
        images = []
        for shard, suffix, offset, count, _, _ in located:
            image = decode_sample({suffix: self._bytes(shard, offset, count)}, self.image_size)[0]
            self.skipped += image is None
            images.append(blank if image is None else image)
        return (torch.stack(images), [x[4] for x in located],
                np.array([x[5] for x in located], dtype=np.int64))

    def _shuffled(self, located_in: Callable[[list[int]], Iterator], rng: random.Random) -> Iterator:
        """One pass: the shards in an order drawn from `rng`, their samples through the shuffle buffer."""
        order = list(range(len(self.shards)))
        rng.shuffle(order)
        return buffered_shuffle(located_in(order), rng, self.buffer)


class ShardTake(_Shards):
    """The located samples of a stream's take (:func:`take_stream`): a part of a MixedData."""

    def __init__(self, shards: list[str], located: list[tuple], buffer: int, image_size: int, summary: dict,
                 labelled: bool):
        super().__init__(shards, buffer, image_size, summary)
        self.located, self.labelled, self.length = located, labelled, len(located)
        by_shard: dict[int, list[int]] = {}
        for i, sample in enumerate(located):
            by_shard.setdefault(sample[0], []).append(i)
        self._by_shard = by_shard

    def pass_order(self, rng: random.Random) -> np.ndarray:
        return np.fromiter(self._shuffled(lambda order: (i for s in order for i in self._by_shard.get(s, ())), rng),
                           dtype=np.int64, count=self.length)

    def load(self, items: Sequence[int]) -> tuple[torch.Tensor, list[str], np.ndarray | None]:
        images, captions, labels = self._decode([self.located[int(i)] for i in items])
        return images, captions, labels if self.labelled else None

    def take(self, index: np.ndarray) -> "ShardTake":
        part = ShardTake(self.shards, [self.located[int(i)] for i in index], self.buffer, self.image_size,
                         self.summary, self.labelled)
        part._open = self._open
        return part


class WholeStream(_Shards):
    """A stream without ``size``: every sample the rules keep, read pass after pass (unknown length)."""

    length = None

    def __init__(self, shards: list[str], rules: StreamRules, buffer: int, image_size: int, summary: dict):
        super().__init__(shards, buffer, image_size, summary)
        self.rules = rules

    def _located(self, order: list[int]) -> Iterator[tuple]:
        for s in order:
            samples = shard_samples(self.shards[s])
            kept, labels = self.rules.judge(samples)
            if labels is not None:
                kept &= labels >= 0
            for j in np.flatnonzero(kept):
                yield (s, *samples[j]["image"], samples[j]["txt"], -1 if labels is None else int(labels[j]))

    def samples(self, rng_of_pass: Callable[[int], random.Random]) -> Iterator[tuple]:
        """The located samples of pass after pass (pass n's order from ``rng_of_pass(n)``)."""
        number = 0
        while True:
            count = 0
            for sample in self._shuffled(self._located, rng_of_pass(number)):
                count += 1
                yield sample
            if not count:
                raise ValueError(f"shards {self.shards[:3]} hold no sample {self.rules.describe()}"
                                 f"{' with a label' if self.rules.labels else ''}")
            number += 1

    def load(self, items: Sequence[tuple]) -> tuple[torch.Tensor, list[str], np.ndarray | None]:
        images, captions, labels = self._decode(items)
        return images, captions, labels if self.rules.labels else None


def take_stream(pattern: str, size: int, subset_seed, rules: StreamRules, *, buffer: int = BUFFER,
                image_size: int = 32) -> ShardTake:
    """The first `size` samples of the stream `pattern` that `rules` keep, in shard order (the shards
    shuffled by `subset_seed`), located; ValueError naming the size and the samples found when the
    stream has fewer."""
    shards = expand_shards(pattern)
    located, found, read, shards_read = [], 0, 0, 0
    for s in np.random.default_rng(subset_seed).permutation(len(shards)):
        samples = shard_samples(shards[s])
        shards_read += 1
        kept, labels = rules.judge(samples)
        for j in range(len(samples)):
            if found == size:
                break
            read += 1
            if not kept[j]:
                continue
            found += 1
            if labels is None or labels[j] >= 0:
                located.append((int(s), *samples[j]["image"], samples[j]["txt"],
                                -1 if labels is None else int(labels[j])))
        if found == size:
            break
    what = rules.describe()
    if found < size:
        raise ValueError(f"size {size}, but the stream {pattern!r} has {found} samples {what} "
                         f"({read} samples in {len(shards)} shards)")
    if not located:
        raise ValueError(f"none of the {size} samples taken from {pattern!r} has a label ({rules.labels})")
    summary = {"streamed": True, "shards": len(shards), "shards_read": shards_read, "samples_read": read,
               "kept": size, "take": f"the first {size} samples {what}, in shard order (shards shuffled with "
                                     f"subset_seed {subset_seed})"}
    if rules.labels is not None:
        summary["labelled"] = len(located)
    return ShardTake(shards, located, buffer, image_size, summary, labelled=rules.labels is not None)


def open_stream(source: dict, rules: StreamRules, image_size: int) -> ShardTake | WholeStream:
    """A webdataset source as a part of a mixture: its take with ``size``, else the whole stream."""
    if source.get("exclude_files"):
        raise ValueError("exclude_files lists image files, and a stream's samples are not files; drop samples "
                         "by their captions with exclude_captions")
    rules = StreamRules(source.get("exclude_captions"), rules.subset, rules.labels, rules.match)
    buffer = int(source.get("buffer", BUFFER))
    if source.get("size"):
        return take_stream(source["urls"], int(source["size"]), source.get("subset_seed", 0), rules, buffer=buffer,
                           image_size=image_size)
    shards = expand_shards(source["urls"])
    return WholeStream(shards, rules, buffer, image_size,
                       {"streamed": True, "shards": len(shards),
                        "take": f"every sample {rules.describe()}, the stream read whole, pass after pass"})
