"""Steps and seconds for CLIP to reach a target zero-shot accuracy: the old settings vs the new.

Trains the quickstart's ``contrastive_diverse`` model (8000 captioned `diverse` images of the
world, evaluated zero-shot on `test`) under two settings, side by side in one run (one process
each, one thread each, so both see the same machine):

- old: ``clipshift-small`` (2-layer transformer text tower, learnable temperature starting at
  1/0.07), batch 64, lr 2e-3, cosine schedule over `--old-epochs` epochs;
- new: ``clipshift-small-bow`` (bag-of-words text tower, temperature starting at 1/100 = CLIP's
  clamp), batch 64, lr 2e-3, cosine over `--new-epochs` epochs (the quickstart's default).

Every `--every` steps the model is evaluated on `test`; the report gives the first step (and the
training seconds up to it, evaluation excluded) at which `test` top-1 reaches `--target`, the
final accuracy, and the ratio old / new.

    python benchmarks/bench_clip_convergence.py                  # about 8 minutes on 2 cores
    python benchmarks/bench_clip_convergence.py --old-epochs 12  # shorter: the old setting may not get there
    python benchmarks/bench_clip_convergence.py --throughput     # 1 process x 2 threads vs 2 x 1 thread
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clipshift.evaluate import HeadSpec, ImageTensors, build_head, evaluate
from clipshift.models.interface import EvalModel
from clipshift.models.factory import ModelSpec, build_model, get_tokenizer
from clipshift.parallel import run_jobs
from clipshift.train.loop import TrainConfig, TrainData, train
from clipshift.world.captions import ZERO_SHOT_TEMPLATES
from clipshift.world.distributions import get_distribution
from clipshift.world.generate import generate_split
from clipshift.world.shapes import CLASS_NAMES

SETTINGS = {"old": "clipshift-small", "new": "clipshift-small-bow"}


def world(n_train: int, n_test: int, seed: int):
    train_split = generate_split(get_distribution("diverse"), n_train, split="train_diverse", seed=seed, progress=False)
    test_split = generate_split(get_distribution("narrow"), n_test, split="test", seed=seed, progress=False)
    as_tensor = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return (as_tensor(train_split.images), train_split.captions, as_tensor(test_split.images),
            torch.from_numpy(test_split.labels))


def converge(name: str, architecture: str, epochs: int, data, every: int, target: float, seed: int) -> dict:
    """Train one setting; return its accuracy curve and the step / seconds at which it reached `target`."""
    images, captions, test_x, test_y = data
    tokenizer = get_tokenizer(architecture)
    model = build_model(ModelSpec("clip", architecture, list(CLASS_NAMES)), seed=seed)
    curve, spent = [], {"eval": 0.0}
    start = time.perf_counter()

    def on_step(step, m):
        if step % every:
            return
        t = time.perf_counter()
        clip = EvalModel.wrap(m, "clip", tokenizer=tokenizer)
        head = build_head(HeadSpec("zeroshot", templates=ZERO_SHOT_TEMPLATES), clip, class_names=CLASS_NAMES)
        accuracy = evaluate(clip, {"test": ImageTensors(test_x, test_y)}, {"zs": head}, progress=False)[0]["top1"]
        m.train()
        spent["eval"] += time.perf_counter() - t
        curve.append((step, accuracy, time.perf_counter() - start - spent["eval"]))

    config = TrainConfig("contrastive", epochs=epochs, batch_size=64, lr=2e-3, seed=seed)
    train(model, TrainData(images, tokens=tokenizer(captions)), config, progress=False, on_step=on_step)
    reached = next(((s, sec) for s, acc, sec in curve if acc >= target), (None, None))
    return dict(name=name, architecture=architecture, epochs=epochs, curve=curve, steps_to_target=reached[0],
                seconds_to_target=reached[1], final=curve[-1][1] if curve else float("nan"),
                seconds=time.perf_counter() - start - spent["eval"])


def _steps(architecture: str, steps: int, data, seed: int) -> float:
    """Images per second of `steps` CLIP steps at batch 64."""
    images, captions, _, _ = data
    n = steps * 64
    tokenizer = get_tokenizer(architecture)
    model = build_model(ModelSpec("clip", architecture, list(CLASS_NAMES)), seed=seed)
    start = time.perf_counter()
    train(model, TrainData(images[:n], tokens=tokenizer(captions[:n])),
          TrainConfig("contrastive", epochs=1, batch_size=64, seed=seed), progress=False)
    return n / (time.perf_counter() - start)


def throughput(data, steps: int) -> None:
    """Images per second of CLIP training: one process with two threads, then two single-threaded
    processes at once (each measured inside its process, after start-up; their sum is the total)."""
    torch.set_num_threads(2)
    one = _steps("clipshift-small-bow", steps, data, 0)
    two = sum(run_jobs(_steps, [("clipshift-small-bow", steps, data, s) for s in (0, 1)], 2))
    print(f"1 process x 2 threads: {one:7.0f} img/s\n2 processes x 1 thread: {two:7.0f} img/s (together)\n"
          f"ratio: {two / one:.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old-epochs", type=int, default=30)
    parser.add_argument("--new-epochs", type=int, default=10)
    parser.add_argument("--every", type=int, default=125, help="evaluate every this many steps")
    parser.add_argument("--target", type=float, default=0.8)
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--throughput", action="store_true", help="compare processes with threads instead")
    args = parser.parse_args(argv)
    data = world(args.train_size, 1200, 0)
    if args.throughput:
        return throughput(data, 150)
    tasks = [(name, arch, args.old_epochs if name == "old" else args.new_epochs, data, args.every, args.target,
              args.seed) for name, arch in SETTINGS.items()]
    old, new = list(run_jobs(converge, tasks, 2, names=list(SETTINGS)))
    print(f"contrastive_diverse, {args.train_size} images, batch 64, evaluated on test every {args.every} steps")
    print(f"{'setting':<8}{'architecture':<22}{'epochs':>7}{'steps to ' + format(args.target, '.0%'):>15}"
          f"{'seconds':>9}{'final test':>12}{'seconds total':>15}")
    for r in (old, new):
        steps = r["steps_to_target"] if r["steps_to_target"] is not None else "not reached"
        secs = f"{r['seconds_to_target']:.0f}" if r["seconds_to_target"] is not None else "-"
        print(f"{r['name']:<8}{r['architecture']:<22}{r['epochs']:>7}{steps:>15}{secs:>9}{r['final']:>12.1%}"
              f"{r['seconds']:>15.0f}")
    if old["steps_to_target"] and new["steps_to_target"]:
        print(f"ratio old / new: {old['steps_to_target'] / new['steps_to_target']:.2f}x steps, "
              f"{old['seconds_to_target'] / new['seconds_to_target']:.2f}x seconds")
    for r in (old, new):
        print(f"{r['name']} curve (step: test top-1): "
              + ", ".join(f"{s}: {100 * a:.0f}%" for s, a, _ in r["curve"]))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
