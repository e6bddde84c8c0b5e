"""Zero-shot ImageNet-style evaluation: clipshift vs CLIP_benchmark, same model, same images.

Builds an ImageNet-val tree (``imagenet/val/<wnid>/*.JPEG``) of random JPEGs, then times, in one run:
- CLIP_benchmark's ``zeroshot_classification.evaluate`` (torchvision ImageFolder, its own head);
- clipshift's ``evaluate_model`` with a cold cache (head and image features computed and cached);
- clipshift again with the warm cache (as when re-scoring with other templates or re-running).
Both use the same model, preprocessing, class names, templates, batch size and loader workers,
and must report the same top-1 accuracy; the script prints the times and their ratios.

Needs the benchmark-only dependency: ``.venv/bin/pip install clip_benchmark``.

    .venv/bin/python benchmarks/bench_zeroshot_vs_clip_benchmark.py [--model clipshift-small]
        [--pretrained FILE] [--classes 100] [--per-class 10] [--templates simple] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipshift.data.imagenet import imagenet_wnids, open_suite
from clipshift.evaluate.real import (encode_suite, evaluate_model, imagenet_class_names, logits_for,
                                    resolve_templates, zero_shot_head)
from clipshift.models.factory import register_model_configs
from clipshift.models.load import load_model


def make_tree(root: Path, classes: int, per_class: int, size: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    wnids = imagenet_wnids()
    chosen = sorted(rng.choice(len(wnids), classes, replace=False))
    for c in chosen:
        folder = root / "imagenet" / "val" / wnids[c]
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(image).save(folder / f"ILSVRC2012_val_{c:04d}{i:04d}.JPEG", quality=90)
    return root


def run_clip_benchmark(model, root: Path, names, templates, batch_size, workers):
    from clip_benchmark.metrics import zeroshot_classification
    from torchvision.datasets import ImageFolder

    index = {w: i for i, w in enumerate(imagenet_wnids())}
    dataset = ImageFolder(str(root / "imagenet" / "val"), transform=model.preprocess)
    to_imagenet = {i: index[c] for c, i in dataset.class_to_idx.items()}
    dataset.target_transform = to_imagenet.__getitem__
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    # CLIP_benchmark's own two steps (its `evaluate` wraps them, but its accuracy helper fails on numpy >= 2.4)
    head = zeroshot_classification.zero_shot_classifier(model.module, model.tokenizer, names,
                                                        [t.replace("{}", "{c}") for t in templates], "cpu", amp=False)
    logits, target = zeroshot_classification.run_classification(model.module, head, loader, "cpu", amp=False)
    elapsed = time.perf_counter() - start
    return elapsed, float((logits.argmax(1) == target).float().mean()), logits.argmax(1)


def run_clipshift(model, root: Path, names, templates, batch_size, workers, cache) -> tuple[float, float]:
    suite = open_suite("imagenet", data_root=root)
    start = time.perf_counter()
    rows = evaluate_model(model, [suite], templates=templates, class_names=names, cache_dir=cache,
                          batch_size=batch_size, workers=workers, device=torch.device("cpu"), progress=False)
    top1 = next(r["value"] for r in rows if r["metric"] == "top1")
    return time.perf_counter() - start, top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="clipshift-small")
    parser.add_argument("--pretrained", help="checkpoint file (default: random weights saved to a temp file)")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--templates", default="simple")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pretrained = args.pretrained
        if pretrained is None:
            import open_clip

            register_model_configs()
            torch.manual_seed(0)
            pretrained = str(tmp / "weights.pt")
            torch.save(open_clip.create_model(args.model).state_dict(), pretrained)
        model = load_model(args.model, pretrained)
        make_tree(tmp / "data", args.classes, args.per_class, args.image_size)
        names, templates = imagenet_class_names(), resolve_templates(args.templates)
        n = args.classes * args.per_class
        print(f"{args.model}: {n} images ({args.classes} classes), 1000 class names x {len(templates)} templates, "
              f"batch {args.batch_size}, {args.workers} loader workers, CPU")

        theirs, their_acc, their_pred = run_clip_benchmark(model, tmp / "data", names, templates, args.batch_size, args.workers)
        cold, cold_acc = run_clipshift(model, tmp / "data", names, templates, args.batch_size, args.workers,
                                       tmp / "cache")
        warm, warm_acc = run_clipshift(model, tmp / "data", names, templates, args.batch_size, args.workers,
                                       tmp / "cache")
        print(f"CLIP_benchmark        {theirs:7.2f} s   top-1 {100 * their_acc:.2f}%")
        print(f"clipshift, cold cache {cold:7.2f} s   top-1 {100 * cold_acc:.2f}%   "
              f"{theirs / cold:.2f}x CLIP_benchmark's speed")
        print(f"clipshift, warm cache {warm:7.2f} s   top-1 {100 * warm_acc:.2f}%   "
              f"{theirs / warm:.0f}x CLIP_benchmark's speed")
        # same predictions, image by image (both list images by class index, then file name)
        suite = open_suite("imagenet", data_root=tmp / "data")
        feats = encode_suite(model, suite, cache_dir=tmp / "cache", progress=False)
        head = zero_shot_head(model, names, templates, cache_dir=tmp / "cache", progress=False)
        ours = logits_for(model, feats, head).argmax(1)
        agree = float((ours == their_pred).float().mean())
        print(f"same top-1 prediction on {100 * agree:.1f}% of the images")
        if not (abs(their_acc - cold_acc) < 1e-6 and abs(cold_acc - warm_acc) < 1e-9) or agree < 0.99:
            print("WARNING: the two evaluations disagree")


if __name__ == "__main__":
    main()
