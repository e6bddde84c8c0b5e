"""CLIP training throughput: clipshift's loop vs open_clip's own training script, side by side.

Same tiny CLIP config, same images (a tab-separated CSV of PNG files and captions from the
embedded world), same batch size, epochs, learning rate and CPU threads; each run is a fresh
process timed end to end (start-up, reading and decoding the images, training, saving). Prints
images/s of each and the ratio.

Needs the benchmark-only dependency: ``.venv/bin/pip install -e '.[bench]'`` (open_clip_torch[training]).

    .venv/bin/python benchmarks/bench_train_vs_open_clip.py [--images 4096] [--epochs 3] [--model clipshift-tiny]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image

from clipshift.world.distributions import get_distribution
from clipshift.world.generate import generate_split

OPEN_CLIP_MAIN = ("import sys; from clipshift.models.factory import register_model_configs; register_model_configs(); "
                  "from open_clip_train.main import main; main(sys.argv[1:])")


def write_csv(folder: Path, n: int) -> Path:
    split = generate_split(get_distribution("narrow"), n, split="train", seed=0, size=32, progress=False)
    (folder / "images").mkdir(parents=True)
    rows = ["filepath\ttitle"]
    for i, (image, caption) in enumerate(zip(split.images, split.captions)):
        path = folder / "images" / f"{i:06d}.png"
        Image.fromarray(image).save(path)
        rows.append(f"{path}\t{caption}")
    table = folder / "train.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{command[:4]} failed:\n{run.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="clipshift-tiny")
    parser.add_argument("--workers", type=int, default=2, help="open_clip data-loader workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = write_csv(tmp, args.images)
        config = {"out": str(tmp / "ours"), "architecture": args.model, "objective": "contrastive",
                  "sources": [{"type": "csv", "path": str(table), "filepath_column": "filepath",
                               "caption_column": "title"}],
                  "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3,
                            "warmup_fraction": 0.05, "augment": True}}
        (tmp / "ours.yaml").write_text(yaml.safe_dump(config))
        ours = timed([sys.executable, "-m", "clipshift.cli", "train", str(tmp / "ours.yaml"), "--quiet"])
        theirs = timed([sys.executable, "-c", OPEN_CLIP_MAIN, "--train-data", str(table), "--dataset-type", "csv",
                        "--csv-separator", "\t", "--csv-img-key", "filepath", "--csv-caption-key", "title",
                        "--model", args.model, "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                        "--lr", "1e-3", "--warmup", "10", "--workers", str(args.workers), "--precision", "fp32",
                        "--logs", str(tmp / "open_clip"), "--name", "bench", "--save-frequency", "0",
                        "--report-to", ""])
        seen = args.images * args.epochs
        print(f"{args.model}, {args.images} images x {args.epochs} epochs, batch {args.batch_size}, CPU, "
              f"whole process timed")
        print(f"open_clip_train.main  {theirs:7.1f} s   {seen / theirs:7.0f} img/s")
        print(f"clipshift train       {ours:7.1f} s   {seen / ours:7.0f} img/s   {theirs / ours:.2f}x open_clip")


if __name__ == "__main__":
    main()
