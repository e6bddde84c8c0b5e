"""Training data mixing file-backed or generated rows with streamed samples, by the sources' weights.

:class:`MixedData` is the training data of a run with a stream among its sources (webdataset shards,
:mod:`.streamed`), for the loop of :mod:`clipshift.train.loop` as a stream: ``len()`` is the epoch
(``samples`` rounded down to whole batches), ``fetch(step)`` makes a global batch current and
``batch(positions)`` decodes this process's rows of it.

- The interleave: each epoch gives source ``s`` exactly ``counts[s]`` of its positions (the epoch's
  samples split by weight, floored, the remainder one each to the first sources) in an order drawn
  from ``default_rng([seed, 0, epoch])``; the position's sample is the source's next one.
- Each source is a sequence of passes over its samples, pass ``p`` in an order drawn from
  :func:`pass_rng` ``(seed, source, p)`` through :func:`buffered_shuffle`: rows (a :class:`RowPart`)
  with a buffer that holds them all (a uniform permutation); a stream's samples in its shards'
  stored order, shards shuffled per pass, through a buffer of ``buffer`` samples. So a batch is a
  function of (seed, step): a resumed run computes it again without replaying earlier batches
  (a stream read whole is read again up to there, headers and captions only), and the same rows as
  a CSV or as one shard read through a buffer at least as large are drawn in the same order.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .lazy import take_images


def pass_rng(seed: int, source: int, number: int) -> random.Random:
    """The generator of pass `number` of source `source` (its shard order and its shuffle)."""
    state = np.random.SeedSequence([int(seed), 1 + int(source), int(number)]).generate_state(1, np.uint64)[0]
    return random.Random(int(state))


def buffered_shuffle(items: Iterable, rng: random.Random, buffer: int | None) -> Iterator:
    """`items` shuffled through a buffer of `buffer` items (None: all of them, a uniform permutation):
    once the buffer is full each new item takes the place of a random one, which is given out; at the
    end the buffer is emptied in random order."""
    pool: list = []
    for item in items:
        if buffer is None or len(pool) < buffer:
            pool.append(item)
            continue
        i = rng.randrange(len(pool))
        out, pool[i] = pool[i], item
        yield out
    while pool:
        i = rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        yield pool.pop()


class RowPart:
    """A file-backed or generated source's rows: images (uint8 tensor or LazyImages), captions, labels."""

    def __init__(self, images, captions: Sequence[str], labels: np.ndarray | None = None):
        self.images, self.captions, self.labels = images, list(captions), labels
        self.length = len(self.captions)

    def pass_order(self, rng: random.Random) -> np.ndarray:
        return np.fromiter(buffered_shuffle(range(self.length), rng, None), dtype=np.int64, count=self.length)

    def load(self, items: Sequence[int]) -> tuple[torch.Tensor, list[str], np.ndarray | None]:
        index = np.asarray(items, dtype=np.int64)
        images = self.images[torch.from_numpy(index)]  # a LazyImages decodes them here
        return images, [self.captions[i] for i in index], None if self.labels is None else self.labels[index]

    def take(self, index: np.ndarray) -> "RowPart":
        index = np.asarray(index, dtype=np.int64)
        return RowPart(take_images(self.images, index), [self.captions[i] for i in index],
                       None if self.labels is None else self.labels[index])


class HeldOut:
    """Held-out samples decoded into memory (early stopping): ``len()`` and ``batch(index)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels, self.tokens = images, labels, None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"images": self.images[index], "labels": self.labels[index]}


def epoch_counts(total: int, weights: Sequence[float]) -> np.ndarray:
    """`total` samples split by `weights`: floored shares, the remainder one each to the first sources."""
    weights = np.asarray(weights, dtype=float)
    counts = np.floor(total * weights / weights.sum()).astype(np.int64)
    counts[: total - counts.sum()] += 1
    return counts


class MixedData:
    """Rows and streams mixed by weight, consumed as a stream (see the module docstring). `parts`:
    :class:`RowPart` or the parts of :mod:`.streamed` (``length``, ``pass_order(rng)`` or, for a stream
    of unknown length, ``samples(rng_of_pass)``; ``load(items)``)."""

    streaming = True

    def __init__(self, parts: Sequence, weights: Sequence[float], samples: int, batch_size: int, *, seed: int,
                 tokenizer: Callable | None = None, need_labels: bool = False):
        if samples < batch_size:
            raise ValueError(f"samples per epoch ({samples}) must be at least one batch ({batch_size})")
        empty = [i for i, part in enumerate(parts) if part.length == 0]
        if empty:
            raise ValueError(f"sources[{empty[0]}] has no samples to train on")
        self.parts, self.weights, self.samples = list(parts), list(weights), samples
        self.batch_size, self.seed, self.tokenizer, self.need_labels = batch_size, seed, tokenizer, need_labels
        self.steps_per_epoch = samples // batch_size
        self.counts = epoch_counts(len(self), weights)
        self.images = None  # the loop's and the objectives' view of the fields: present, but per batch
        self.labels = torch.zeros(0, dtype=torch.long) if need_labels else None
        self.tokens = torch.zeros(0, dtype=torch.long) if tokenizer is not None else None
        self.current, self.sources, self.items = -1, np.zeros(0, dtype=np.int64), []
        self._epoch, self._orders, self._streams = (-1, None, None), {}, {}

    def __len__(self) -> int:
        return self.steps_per_epoch * self.batch_size

    @property
    def skipped(self) -> int:
        """Streamed images that did not decode (blank images in their place keep the batch's size)."""
        return sum(getattr(part, "skipped", 0) for part in self.parts)

    def _slots(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The source of every position of `epoch`, and its rank among that source's positions."""
        if self._epoch[0] != epoch:
            slots = np.random.default_rng([self.seed, 0, epoch]).permutation(
                np.repeat(np.arange(len(self.parts)), self.counts))
            ranks = np.empty(len(slots), dtype=np.int64)
            for s in range(len(self.parts)):
                where = slots == s
                ranks[where] = np.arange(where.sum())
            self._epoch = (epoch, slots, ranks)
        return self._epoch[1], self._epoch[2]

    def fetch(self, global_step: int) -> None:
        """Make global batch `global_step` the current one (computed, not replayed)."""
        if global_step == self.current:
            return
        epoch, step = divmod(global_step, self.steps_per_epoch)
        slots, ranks = self._slots(epoch)
        at = slice(step * self.batch_size, (step + 1) * self.batch_size)
        sources, items = slots[at], [None] * self.batch_size
        drawn = epoch * self.counts[sources] + ranks[at]  # each position's sample number in its source
        for s in np.unique(sources):
            where = np.flatnonzero(sources == s)
            for w, item in zip(where, self._items(int(s), drawn[where])):
                items[w] = item
        self.current, self.sources, self.items = global_step, sources, items

    def _items(self, s: int, drawn: np.ndarray) -> list:
        part = self.parts[s]
        if part.length is None:
            return self._stream_items(s, drawn)
        out = np.empty(len(drawn), dtype=np.int64)
        passes = drawn // part.length
        for number in np.unique(passes):
            key = (s, int(number))
            if key not in self._orders:
                self._orders = {k: v for k, v in self._orders.items() if k[0] != s or k[1] >= number - 1}
                self._orders[key] = part.pass_order(pass_rng(self.seed, s, int(number)))
            where = passes == number
            out[where] = self._orders[key][drawn[where] % part.length]
        return list(out)

    def _stream_items(self, s: int, drawn: np.ndarray) -> list:
        """The next samples of a stream read whole (unknown length): in order, skipping ahead if needed."""
        position, iterator = self._streams.get(s, (0, None))
        if iterator is None or drawn[0] < position:
            position, iterator = 0, self.parts[s].samples(lambda number: pass_rng(self.seed, s, number))
        for _ in range(int(drawn[0]) - position):
            next(iterator)
        out = [next(iterator) for _ in range(len(drawn))]
        self._streams[s] = (int(drawn[-1]) + 1, iterator)
        return out

    def batch(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decode rows `positions` (indices into the current global batch)."""
        positions = np.asarray(torch.as_tensor(positions).cpu(), dtype=np.int64)
        images, captions, labels = None, [""] * len(positions), np.full(len(positions), -1, dtype=np.int64)
        sources = self.sources[positions]
        for s in np.unique(sources):
            where = np.flatnonzero(sources == s)
            part = self.parts[int(s)]
            got, texts, labelled = part.load([self.items[positions[w]] for w in where])
            if images is None:
                images = torch.empty((len(positions), *got.shape[1:]), dtype=torch.uint8)
            images[torch.from_numpy(where)] = got
            for w, text in zip(where, texts):
                captions[w] = text
            if labelled is not None:
                labels[where] = labelled
        out = {"images": images}
        if self.tokenizer is not None:
            out["tokens"] = self.tokenizer(captions)
        if self.need_labels:
            out["labels"] = torch.from_numpy(labels)
        return out

    def split_holdout(self, fraction: float, seed: int) -> tuple["MixedData", HeldOut]:
        """(training data, held-out samples): round(fraction · n) of each source's n samples, a
        permutation seeded by (seed, source), decoded into memory; the epoch shrinks by the fraction."""
        if not self.need_labels:
            raise ValueError("holdout: early stopping measures accuracy on held-out labelled samples; the "
                             "objective trains without labels")
        whole = [i for i, part in enumerate(self.parts) if part.length is None]
        if whole:
            raise ValueError(f"holdout: sources[{whole[0]}] is a stream read whole; give it a size (a take of the "
                             f"stream) to hold samples out of it")
        kept, held = [], []
        for s, part in enumerate(self.parts):
            order = np.random.default_rng([seed, 2, s]).permutation(part.length)
            k = int(round(fraction * part.length))
            if not 1 <= k < part.length:
                raise ValueError(f"holdout {fraction} of the {part.length} samples of sources[{s}] leaves no "
                                 f"held-out or no training samples")
            kept.append(part.take(np.sort(order[k:])))
            held.append(part.load(np.sort(order[:k])))
        samples = self.samples - int(round(fraction * self.samples))
        data = MixedData(kept, self.weights, samples, self.batch_size, seed=self.seed, tokenizer=self.tokenizer,
                         need_labels=True)
        return data, HeldOut(torch.cat([h[0] for h in held]),
                             torch.from_numpy(np.concatenate([h[2] for h in held])).long())
