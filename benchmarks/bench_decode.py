"""Training from JPEG files decoded per batch against the same images in memory, side by side.

    python benchmarks/bench_decode.py --images 1000 --image-size 224 --batch-size 64

Writes `--images` ImageNet-sized JPEGs (500x375, smooth colour fields with grain, ~65 KB at
quality 87) into a temporary folder, then trains one epoch of the supervised objective on them
(`clipshift.train.loop.train`, augmentation on) three ways, on the same tiny tower, one after the
other in this run:

- in memory: the images decoded once beforehand (what `in_memory: true` does; not timed);
- decoded when taken (`prefetch: 0`): each batch decoded on the threads while the step waits;
- decoded ahead (`prefetch: 2`, the default): the next batches decoded while the step runs.

The tower is as small as a model can be (`--architecture pool-linear`: an average pool to 8x8 and
one linear layer), so that the data path, not the model, sets the pace: it is the GPU's case, where
a ResNet-50 step takes ~1,000-2,000 images/s and the CPU only feeds it. `--architecture
clipshift-tiny` (or any clipshift image tower) trains a real one. Prints each training rate, their
ratios to the in-memory run, and the decode rate of the files per thread and with all threads
(`clipshift.data.lazy.measure_decode_rate`), which bounds the rate of any training from these files.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipshift.data.lazy import LazyImages, decode_threads, measure_decode_rate
from clipshift.models.factory import ModelSpec, build_model
from clipshift.train.loop import TrainConfig, TrainData, train


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    """`n` 500x375 JPEGs: a bicubic colour field from a 16x12 grid plus Gaussian grain, quality 87."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        field = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((500, 375), Image.BICUBIC)
        pixels = np.asarray(field).astype(np.int16) + rng.normal(0, 12, (375, 500, 3)).astype(np.int16)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, "JPEG", quality=87)
        paths.append(str(path))
    return paths


class PoolLinear(torch.nn.Module):
    """The smallest classifier: average pool to 8x8, one linear layer (``head``, as the objective asks)."""

    def __init__(self, classes: int):
        super().__init__()
        self.pool = torch.nn.AdaptiveAvgPool2d(8)
        self.head = torch.nn.Linear(3 * 8 * 8, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(images).flatten(1))


def model_for(architecture: str, classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    if architecture == "pool-linear":
        return PoolLinear(classes)
    return build_model(ModelSpec("classifier", architecture, [f"c{i}" for i in range(classes)]), seed=0)


def training_rate(images, labels: torch.Tensor, args, device: torch.device) -> float:
    """Images per second of one epoch of supervised training on `images` (model built outside the timing)."""
    model = model_for(args.architecture, int(labels.max()) + 1).to(device)
    config = TrainConfig("supervised", epochs=1, batch_size=args.batch_size, lr=1e-3, warmup_fraction=0.0)
    start = time.perf_counter()
    train(model, TrainData(images, labels=labels), config, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(labels) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--architecture", default="pool-linear", help="pool-linear, or a clipshift image tower")
    parser.add_argument("--threads", default="auto", help="decode threads (auto: this process's cores)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each way (the median is printed)")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch's intra-op threads for the step (0: torch's default); 1 leaves the other cores "
                             "to decoding, as a GPU step does")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    threads = decode_threads(args.threads if args.threads == "auto" else int(args.threads))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as folder:
        paths = write_jpegs(Path(folder), args.images)
        kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        labels = torch.arange(args.images) % 10
        lazy = {p: LazyImages(paths, args.image_size, num_workers=threads, prefetch=p) for p in (0, 2)}
        memory = lazy[0].materialize()
        ways = {"in memory": memory, "decoded when taken (prefetch 0)": lazy[0],
                "decoded ahead (prefetch 2)": lazy[2]}
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats):  # interleaved, so that a change of load hits every way alike
            for name, images in ways.items():
                rates[name].append(training_rate(images, labels, args, device))
        one = measure_decode_rate(paths, args.image_size, max_images=args.images, seconds=20, workers=1)
        every = measure_decode_rate(paths, args.image_size, max_images=args.images, seconds=20, workers=threads)
    print(f"{args.images} JPEGs of 500x375 (mean {kb:.0f} KB) at {args.image_size}px, batch {args.batch_size}, "
          f"{args.architecture} on {device}, {cores} cores, {threads} decode threads, torch {torch.get_num_threads()} "
          f"threads; median of {args.repeats} epochs each:")
    base = statistics.median(rates["in memory"])
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"  {name:34s} {rate:8.0f} img/s  ({rate / base:.2f}x in memory)")
    ahead, taken = (statistics.median(rates[k]) for k in ("decoded ahead (prefetch 2)",
                                                          "decoded when taken (prefetch 0)"))
    print(f"  decoding ahead trains {ahead / taken:.2f}x as fast as decoding when taken")
    print(f"  decode rate: {one.total:.0f} img/s with 1 thread; {every.total:.0f} img/s with {every.workers} threads "
          f"({every.total / every.workers:.0f} per thread; one thread alone {every.per_worker:.0f})")


if __name__ == "__main__":
    main()
