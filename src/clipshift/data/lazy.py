"""Training images decoded when a batch is taken, for sets too large to hold decoded in memory.

:class:`LazyImages` stands where the training loop expects a uint8 (N, 3, H, W) tensor
(:class:`~clipshift.train.loop.TrainData` ``images``): ``len()``, ``.shape``, ``.dtype``, and
indexing with a LongTensor, an ndarray, a list, a slice or a bool mask gives the decoded uint8
batch (B, 3, size, size). A file is decoded (RGB, resized to size x size, bilinear) by the same
function :func:`~clipshift.data.csv_source.load_images` uses, on a few threads, so a batch holds
the very pixels an in-memory copy would. Only an index map is held: :meth:`LazyImages.take`
(subsets, mixture picks, label filters) and :meth:`LazyImages.concat` (sources side by side, in
memory tensors included) never decode; :meth:`LazyImages.materialize` decodes every distinct
file once into one tensor.

Training takes batches ahead: :meth:`LazyImages.prefetched` decodes the next ``prefetch`` batches
of a known sequence on ``num_workers`` threads (``"auto"``: this process's cores, shared among the
``torchrun`` processes of the node) while the caller trains on the current one, each batch the same
tensor ``images[index]`` gives. :func:`measure_decode_rate` measures how fast a source decodes.
"""

from __future__ import annotations

import collections
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from ..progress import progress_bar
from ._images import ImageDecodeError, check_size, decode_many, decode_rgb, stack_into

DECODE_THREADS = "auto"  # PIL decodes with the GIL released: threads overlap the file reads and decodes
PREFETCH = 2  # batches decoded ahead of the one training takes (0: decoded when taken)
THREAD_PREFIX = "clipshift-decode"  # the name of every thread decoding batches ahead


def decode_threads(setting: int | str = DECODE_THREADS) -> int:
    """Threads decoding files in this process: `setting` (an int >= 0), or for ``"auto"`` the cores this
    process may run on divided among the processes ``torchrun`` started on this node (at least 1)."""
    if setting == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ValueError(f"decode threads: expected an integer >= 0 or 'auto', got {setting!r}")
    return setting


def check_prefetch(prefetch: int) -> int:
    """`prefetch` (batches decoded ahead), or ValueError unless it is an int >= 0."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(f"prefetch: expected an integer >= 0 (batches decoded ahead), got {prefetch!r}")
    return prefetch


def take_images(images, index):
    """The rows `index` (an int or bool ndarray or tensor) of uint8 images: a LazyImages' subset (nothing
    decoded), or a tensor's rows."""
    return images.take(index) if isinstance(images, LazyImages) else images[torch.as_tensor(index)]


def _as_index(key, length: int) -> np.ndarray:
    """int64 positions of `key` (slice, bool mask, int sequence, LongTensor, ndarray) in 0..length-1."""
    if isinstance(key, slice):
        return np.arange(length)[key]
    if torch.is_tensor(key):
        key = key.cpu().numpy()
    index = np.asarray(key)
    if index.dtype == bool:
        if index.shape != (length,):
            raise IndexError(f"bool mask of shape {index.shape} for {length} images")
        return np.flatnonzero(index)
    if index.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(index.dtype, np.integer) or index.ndim != 1:
        raise IndexError(f"index images with a 1-D integer or bool array, got {index.dtype} of shape {index.shape}")
    if index.min() < -length or index.max() >= length:
        raise IndexError(f"index out of range for {length} images: {int(index.min())} .. {int(index.max())}")
    return np.where(index < 0, index + length, index).astype(np.int64)


class LazyImages:
    """`paths` decoded on demand as uint8 (3, `size`, `size`) images (see the module docstring)."""

    dtype = torch.uint8

    def __init__(self, paths: Sequence[str], size: int, *, num_workers: int | str = DECODE_THREADS,
                 prefetch: int = PREFETCH):
        check_size(size)
        if size is None:
            raise ValueError("LazyImages needs size= (every image is resized to size x size)")
        self.size, self.num_workers, self.prefetch = size, decode_threads(num_workers), check_prefetch(prefetch)
        self._banks: list = [np.asarray([str(p) for p in paths], dtype=object)]
        self._bank = np.zeros(len(self._banks[0]), dtype=np.int32)
        self._row = np.arange(len(self._banks[0]), dtype=np.int64)
        self._pool: ThreadPoolExecutor | None = None

    def _view(self, bank: np.ndarray, row: np.ndarray, banks: list | None = None) -> "LazyImages":
        view = LazyImages.__new__(LazyImages)
        view.size, view.num_workers, view.prefetch, view._pool = self.size, self.num_workers, self.prefetch, None
        view._banks, view._bank, view._row = self._banks if banks is None else banks, bank, row
        return view

    def __len__(self) -> int:
        return len(self._row)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), 3, self.size, self.size))

    def __repr__(self) -> str:
        files = sum(len(b) for b in self._banks if not torch.is_tensor(b))
        return f"LazyImages({len(self)} images of 3x{self.size}x{self.size} from {files} files)"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}  # a thread pool does not pickle

    @property
    def paths(self) -> list[str | None]:
        """The file of every image (None for an image held in memory)."""
        return [None if torch.is_tensor(self._banks[b]) else self._banks[b][r] for b, r in zip(self._bank, self._row)]

    def take(self, index) -> "LazyImages":
        """The images at `index` (any index __getitem__ takes), as a LazyImages: nothing is decoded."""
        index = _as_index(index, len(self))
        return self._view(self._bank[index], self._row[index])

    @classmethod
    def concat(cls, parts: Sequence["LazyImages | torch.Tensor"]) -> "LazyImages":
        """`parts` one after the other: LazyImages of one size, or uint8 (N, 3, size, size) tensors."""
        lazy = [p for p in parts if isinstance(p, LazyImages)]
        if not lazy:
            raise ValueError("LazyImages.concat needs at least one LazyImages among the parts")
        size = lazy[0].size
        banks, bank_ids, rows = [], [], []
        for part in parts:
            if isinstance(part, LazyImages):
                if part.size != size:
                    raise ValueError(f"cannot concatenate images of size {part.size} and {size}")
                new_ids = []
                for bank in part._banks:  # a bank shared by several parts (views of one source) is kept once
                    same = [j for j, known in enumerate(banks) if known is bank]
                    new_ids.append(same[0] if same else len(banks))
                    banks += [] if same else [bank]
                bank_ids.append(np.asarray(new_ids, dtype=np.int32)[part._bank])
                rows.append(part._row)
            else:
                if not torch.is_tensor(part) or part.dtype != torch.uint8 or tuple(part.shape[1:]) != (3, size, size):
                    got = f"{getattr(part, 'dtype', type(part).__name__)} {tuple(getattr(part, 'shape', ()))}"
                    raise ValueError(f"expected uint8 (N, 3, {size}, {size}) images, got {got}")
                bank_ids.append(np.full(len(part), len(banks), dtype=np.int32))
                rows.append(np.arange(len(part), dtype=np.int64))
                banks.append(part)
        return lazy[0]._view(np.concatenate(bank_ids).astype(np.int32), np.concatenate(rows), banks)

    def _decode(self, paths: Sequence[str]) -> list[torch.Tensor]:
        if self.num_workers == 0 or len(paths) < 2:
            return [decode_rgb(p, self.size) for p in paths]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_workers)
        return list(self._pool.map(lambda p: decode_rgb(p, self.size), paths))

    def _gather(self, index: np.ndarray) -> tuple[torch.Tensor, list[tuple[np.ndarray, list[str]]]]:
        """The batch tensor of `index` with the rows held in memory copied in, and the (positions, files)
        still to decode into it, one pair per bank of files."""
        out = torch.empty((len(index), 3, self.size, self.size), dtype=torch.uint8)
        banks, rows, files = self._bank[index], self._row[index], []
        for b in np.unique(banks):
            where = np.flatnonzero(banks == b)
            bank = self._banks[b]
            if torch.is_tensor(bank):
                out[torch.from_numpy(where)] = bank[torch.from_numpy(rows[where])]
            else:
                files.append((where, list(bank[rows[where]])))
        return out, files

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self[[int(key)]][0]
        out, files = self._gather(_as_index(key, len(self)))
        for where, paths in files:
            out[torch.from_numpy(where)] = torch.stack(self._decode(paths))
        return out

    def prefetched(self, indices: Iterable, prefetch: int | None = None) -> "Prefetcher":
        """The batches ``self[index]`` for `indices` in order, decoded `prefetch` (default: ``self.prefetch``)
        batches ahead on ``max(1, num_workers)`` threads: a :class:`Prefetcher`, to use in a ``with``."""
        return Prefetcher(self, indices, self.prefetch if prefetch is None else check_prefetch(prefetch),
                          max(1, self.num_workers))

    def materialize(self, progress: bool = False) -> torch.Tensor:
        """All images decoded into one uint8 (N, 3, size, size) tensor (each distinct file once)."""
        out = torch.empty(tuple(self.shape), dtype=torch.uint8)
        banks = self._bank
        for b in np.unique(banks):
            where = np.flatnonzero(banks == b)
            bank = self._banks[b]
            if torch.is_tensor(bank):
                out[torch.from_numpy(where)] = bank[torch.from_numpy(self._row[where])]
                continue
            distinct, inverse = np.unique(self._row[where], return_inverse=True)
            paths = list(bank[distinct])
            with progress_bar(total=len(paths), desc="decode", unit="img", enabled=progress) as bar:
                images, _ = stack_into(decode_many(paths, self.size, self.num_workers, skip_errors=False), paths, bar)
            out[torch.from_numpy(where)] = images[torch.from_numpy(inverse.reshape(-1))]
        return out


# --- batches decoded ahead -----------------------------------------------------------------------------------------

def _decode_into(out: torch.Tensor, where: np.ndarray, paths: Sequence[str], size: int) -> None:
    """Decode `paths` into the rows `where` of `out` (one task of a batch); any failure names the file.
    The copies are numpy's: a torch copy would start its own intra-op threads from every decoding thread."""
    target = out.numpy()
    for row, path in zip(where.tolist(), paths):
        try:
            target[row] = decode_rgb(path, size).numpy()
        except ImageDecodeError:
            raise
        except Exception as error:  # what PIL does not report as a decode error still names the file
            raise ImageDecodeError(f"cannot decode image {path}: {type(error).__name__}: {error}") from error


class Prefetcher:
    """The batches of a :class:`LazyImages` decoded ahead (made by :meth:`LazyImages.prefetched`).

    ``next(index)`` returns the next batch of the sequence, ``images[index]`` bit for bit, and checks
    that `index` is the one the sequence holds; while the caller uses it, the following `prefetch`
    batches are decoded on the threads (a bounded queue: at most `prefetch` batches wait). A file that
    cannot be decoded raises :class:`ImageDecodeError` naming it, in the caller, when its batch is
    taken. ``close()``, and leaving a ``with`` block whatever the reason (an exception,
    KeyboardInterrupt), drops the batches not yet decoded and joins the threads."""

    CHUNK = 8  # images per task at most

    def __init__(self, images: LazyImages, indices: Iterable, prefetch: int, workers: int):
        self._images, self._indices, self._ahead, self._workers = images, iter(indices), prefetch, workers
        self._queue: collections.deque = collections.deque()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix=THREAD_PREFIX)
        self._fill()

    def _submit(self) -> bool:
        index = next(self._indices, None)
        if index is None:
            return False
        index = _as_index(index, len(self._images))
        out, files = self._images._gather(index)
        chunk = max(1, min(self.CHUNK, -(-len(index) // self._workers)))
        futures = [self._pool.submit(_decode_into, out, where[i:i + chunk], paths[i:i + chunk], self._images.size)
                   for where, paths in files for i in range(0, len(paths), chunk)]
        self._queue.append((index, out, futures))
        return True

    def _fill(self) -> None:
        while len(self._queue) < self._ahead and self._submit():
            pass

    def next(self, index=None) -> torch.Tensor:
        """The next batch (uint8 (B, 3, size, size)); `index`, when given, must be the batch's index."""
        if not self._queue and not self._submit():
            raise RuntimeError("no batch left to take: the prefetched sequence is exhausted")
        expected, out, futures = self._queue.popleft()
        if index is not None and not np.array_equal(_as_index(index, len(self._images)), expected):
            raise RuntimeError("batch taken out of order: the prefetched sequence holds another index")
        self._fill()
        for future in futures:
            future.result()
        return out

    def close(self) -> None:
        for _, _, futures in self._queue:
            for future in futures:
                future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- how fast a source decodes -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecodeRate:
    """images/s decoding (and resizing) a source's files as training does."""

    images: int  # files decoded by all the workers together (the first ones of the source)
    workers: int  # threads decoding together
    per_worker: float  # images/s of one thread decoding alone
    total: float  # images/s of `workers` threads together


def _timed_decode(paths: Sequence[str], size: int, workers: int, seconds: float) -> tuple[int, float]:
    """(files decoded, seconds taken) decoding `paths` in order on `workers` threads (0: this thread),
    in waves, stopping after the wave that passes `seconds`."""
    wave = max(1, workers) * 4
    pool = ThreadPoolExecutor(workers, thread_name_prefix=THREAD_PREFIX) if workers else None
    done, start = 0, time.perf_counter()
    try:
        while done < len(paths) and time.perf_counter() - start < seconds:
            part = paths[done:done + wave]
            if pool is None:
                for path in part:
                    decode_rgb(path, size)
            else:
                list(pool.map(lambda path: decode_rgb(path, size), part))
            done += len(part)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return done, time.perf_counter() - start


def measure_decode_rate(paths: Sequence[str], image_size: int, *, max_images: int = 256, seconds: float = 10.0,
                        workers: int | str = DECODE_THREADS) -> DecodeRate:
    """How fast this machine decodes the files `paths` for training at `image_size`: the first
    `max_images` of them are decoded and resized to image_size x image_size (what a batch of
    :class:`LazyImages` does) by `workers` threads together (``"auto"``: as training sizes them), reading
    the files as training does, which gives ``total``; then the files so decoded again by one thread
    alone (from the page cache now), which gives ``per_worker``. Each pass stops early once it has run
    for half of `seconds`. A file that cannot be decoded raises :class:`ImageDecodeError` naming it.
    Training from these files runs at most at the lower of the training step's rate and ``total``."""
    check_size(image_size)
    if image_size is None:
        raise ValueError("measure_decode_rate needs an image_size")
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"max_images must be a positive integer, got {max_images!r}")
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    paths = [str(p) for p in list(paths)[:max_images]]
    if not paths:
        raise ValueError("measure_decode_rate needs at least one image file")
    workers = max(1, decode_threads(workers))
    done, took = _timed_decode(paths, image_size, workers, seconds / 2)
    total = done / max(took, 1e-9)
    if workers == 1:
        return DecodeRate(done, 1, total, total)
    alone, alone_took = _timed_decode(paths[:done], image_size, 0, seconds / 2)
    return DecodeRate(done, workers, alone / max(alone_took, 1e-9), total)
