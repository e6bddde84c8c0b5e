"""K checkpoints scored by one `clipshift eval --models` against K separate `clipshift eval` calls, side by side.

    python benchmarks/bench_eval_many.py --images 300 --counts 1,4,16

Writes an ImageNet-layout tree into a temporary folder: `imagenet/val/<wnid>/` with `--images`
ImageNet-sized JPEGs (500x375, ~65 KB, as `bench_decode.py` writes them) over 10 classes, and
`imagenet-r/<wnid>/` with a third as many over 5. Saves 16 checkpoints of a small registered model
(`--model timm/clipshift_convnet_tiny`: this package's tiny convnet, registered with timm; or
`--model clipshift-tiny`, the tiny CLIP, scored zero-shot with `--templates`), each from another seed.
Then, for each K of `--counts`, one after the other in this run, as a user would type them:

- K separate calls: `clipshift eval --model M --pretrained ckpt_i.pth ...`, one process each, one
  after another (each pays Python's start, its imports, the model and a decode of both datasets);
- one call: `clipshift eval --models models.txt --models-at-once K ...` (one start, one decode of each
  dataset, every batch encoded by the K models).

Both without the feature cache (`--no-cache`: every run decodes), with the same `--workers` and
`--batch-size`. Prints the wall-clock seconds of each and their ratio, and checks that both give
every model the same numbers (results.csv equal).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from bench_decode import write_jpegs
from clipshift.data.imagenet import imagenet_wnids


def write_tree(root: Path, images: int) -> None:
    """`images` JPEGs over 10 classes under imagenet/val, a third as many over 5 under imagenet-r."""
    wnids = imagenet_wnids()
    for folder, classes, n in (("imagenet/val", wnids[:10], images), ("imagenet-r", wnids[:5], images // 3)):
        for c, wnid in enumerate(classes):
            (root / folder / wnid).mkdir(parents=True)
            write_jpegs(root / folder / wnid, n // len(classes) + (c < n % len(classes)), seed=c)


def write_checkpoints(folder: Path, model: str, count: int) -> list[Path]:
    """`count` randomly initialised checkpoints of `model`, one seed each."""
    import open_clip
    import timm

    from clipshift.models import convnet  # noqa: F401  (registers clipshift_convnet_* with timm)
    from clipshift.models.factory import register_model_configs

    register_model_configs()
    paths = []
    for seed in range(count):
        torch.manual_seed(seed)
        if model.startswith("timm/"):
            module = timm.create_model(model[len("timm/"):], num_classes=1000)
        else:
            logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: none are meant
            module = open_clip.create_model(model)
            logging.disable(logging.NOTSET)
        paths.append(folder / f"seed{seed}.pth")
        torch.save(module.state_dict(), paths[-1])
    return paths


def clipshift(argv: list[str]) -> float:
    """Seconds `python -m clipshift.cli *argv` takes (it must succeed)."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "clipshift.cli", *argv], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"clipshift {' '.join(argv[:3])} ... failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="images of imagenet/val (imagenet-r: a third)")
    parser.add_argument("--counts", default="1,4,16", help="numbers of checkpoints K")
    parser.add_argument("--model", default="timm/clipshift_convnet_tiny",
                        help="timm/clipshift_convnet_tiny (a classifier) or clipshift-tiny (CLIP, zero-shot)")
    parser.add_argument("--templates", default="simple", help="zero-shot templates for a CLIP model")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    counts = [int(k) for k in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_tree(root / "data", args.images)
        checkpoints = write_checkpoints(root, args.model, max(counts))
        common = ["eval", "--datasets", "imagenet,imagenet-r", "--data-root", str(root / "data"), "--no-cache",
                  "--workers", str(args.workers), "--batch-size", str(args.batch_size), "--quiet",
                  "--templates", args.templates]
        rows = []
        for k in counts:
            lone, many = root / f"lone{k}", root / f"many{k}"
            separate = sum(clipshift([*common, "--model", args.model, "--pretrained", str(path), "--out", str(lone)])
                           for path in checkpoints[:k])
            (root / "models.txt").write_text("".join(f"{args.model} {path}\n" for path in checkpoints[:k]))
            together = clipshift([*common, "--models", str(root / "models.txt"), "--models-at-once", str(k),
                                  "--out", str(many)])
            a, b = (pd.read_csv(d / "results.csv").sort_values(["model", "dataset", "metric"], ignore_index=True)
                    for d in (lone, many))
            rows.append((k, separate, together, a.equals(b)))
            shutil.rmtree(lone)
            shutil.rmtree(many)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.images} + {args.images // 3} JPEGs of 500x375 (imagenet, imagenet-r), {args.model}"
          f"{' zero-shot, ' + args.templates + ' templates' if not args.model.startswith('timm/') else ''}, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}, {cores} cores, --workers {args.workers}, "
          f"--batch-size {args.batch_size}, no feature cache:")
    print(f"  {'K':>3}  {'K separate calls':>17}  {'one --models call':>18}  {'speed-up':>8}  same numbers")
    for k, separate, together, same in rows:
        print(f"  {k:>3}  {separate:>15.1f} s  {together:>16.1f} s  {separate / together:>7.2f}x  {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
