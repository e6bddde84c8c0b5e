"""Training throughput of each objective on one architecture, side by side, and the study's cost.

    python benchmarks/bench_train_throughput.py --architecture RN50 --image-size 224 --batch-size 128 \
        --config configs/fang2022-imagenet.yaml

Measures images per second of one optimiser step (forward, loss, backward, AdamW step) for the
contrastive, supervised and SimCLR objectives on random uint8 images and captions, on the
available device (CUDA when present), after warm-up steps; prints each rate, their ratios to the
supervised step, and, with --config, the study's training cost: the sum over its plan of
size × epochs image passes per objective divided by the measured rate. An estimate: data loading,
evaluation and a different batch size are not in it.
"""

from __future__ import annotations

import argparse
import time

import torch

from clipshift.models.factory import ModelSpec, build_model, get_tokenizer
from clipshift.train.objectives import get_objective
from clipshift.train.loop import TrainConfig

KINDS = {"contrastive": "clip", "supervised": "classifier", "simclr": "simclr"}


def rate(objective: str, args, device: torch.device) -> float:
    model = build_model(ModelSpec(KINDS[objective], args.architecture, [f"c{i}" for i in range(1000)]), seed=0)
    model.to(device).train()
    loss_fn = get_objective(objective)(TrainConfig(objective, epochs=1, batch_size=args.batch_size, lr=1e-3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), dtype=torch.uint8,
                           device=device)
    from clipshift.models.factory import normalize_images

    batch = {"images": normalize_images(images),  # as the loop gives them to every objective
             "labels": torch.randint(0, 1000, (args.batch_size,), device=device),
             "tokens": get_tokenizer(args.architecture)(["a photo of a thing"] * args.batch_size).to(device)}
    generator = torch.Generator(device=device).manual_seed(0)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss_fn.loss(model, batch, generator=generator).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", default="clipshift-small-bow")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--config", help="a study configuration whose training cost to estimate")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rates = {objective: rate(objective, args, device) for objective in KINDS}
    print(f"{args.architecture} at {args.image_size}px, batch {args.batch_size}, {device}:")
    for objective, r in rates.items():
        print(f"  {objective:12s} {r:9.1f} img/s  ({r / rates['supervised']:.2f}x the supervised step)")
    if args.config:
        from clipshift.recipes.study import load_study_config, study_plan

        passes: dict[str, int] = {}
        for entry in study_plan(load_study_config(args.config)):
            key = entry["objective"] if entry["objective"] in rates else "supervised"
            passes[key] = passes.get(key, 0) + entry["train_size"] * entry["epochs"]
        seconds = sum(n / rates[k] for k, n in passes.items())
        print(f"{args.config}: {sum(passes.values()):.3g} image passes "
              f"({', '.join(f'{k} {n:.3g}' for k, n in passes.items())}); estimated training time on this device "
              f"{seconds / 3600:.1f} h ({seconds / 86400:.1f} days), an estimate: no data loading or evaluation")


if __name__ == "__main__":
    main()
