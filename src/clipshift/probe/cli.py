"""``clipshift probe``: outlier features, pruning, concepts and CKA (Crabbé et al.) from the command line.

    clipshift probe --run runs/quickstart [--out DIR]
    clipshift probe --model ViT-B-32 --pretrained openai --model timm/resnet50 --pretrained a1_in1k \\
        --data-root /data [--datasets imagenet,imagenet-r] [--broden /data/broden1_224] [--er er.csv] --out DIR

Wire into ``clipshift.cli.build_parser`` with ``add_parser(sub)``; the handler returns an exit code.
Importing this module (and registering the parser) loads neither torch nor open_clip: the handler
imports what it needs.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from ..options import dataset_roots
from ._defaults import AUC_THRESHOLD, DEFAULT_KS, OUTLIER_RATIO

REAL_DATASETS = "imagenet,imagenet-v2,imagenet-sketch,imagenet-r,imagenet-a,objectnet"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``probe`` sub-command on an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "probe", help="outlier features, pruning, concepts and CKA of image representations (Crabbé et al.)",
        description="Probe the image representation h of models: kurtosis and outlier dimensions, accuracy with the "
                    "largest (or random) dimensions pruned, linear concept probes, linear CKA across models. Writes "
                    "OUT/probe.csv (model,analysis,key,value) and OUT/figures/probe_*.png. Either --run (a quickstart "
                    "run directory) or one or more --model (open_clip / timm / clipshift checkpoints) on ImageNet-family "
                    "data.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a quickstart run directory (checkpoints/, world/, er.csv)")
    source.add_argument("--model", action="append",
                        help="open_clip name, hf-hub:ORG/NAME, timm/ARCH or a clipshift checkpoint folder (repeatable)")
    p.add_argument("--pretrained", action="append",
                   help="pretrained tag or file, once per --model in the same order ('none' for a checkpoint folder "
                        "or hf-hub: model)")
    p.add_argument("--data-root", type=Path, help="folder where the ImageNet-family datasets are unpacked")
    p.add_argument("--dataset-root", action="append", metavar="NAME=DIR", help="one dataset's own root (repeatable)")
    p.add_argument("--datasets", default=REAL_DATASETS,
                   help=f"comma-separated suites, the first one in distribution (default {REAL_DATASETS})")
    p.add_argument("--broden", type=Path, help="Broden folder (e.g. broden1_224) for the concept probes")
    p.add_argument("--broden-categories", help="comma-separated Broden categories (default: all)")
    p.add_argument("--layer", action="append", default=[],
                   help="also report kurtosis/outliers of this named intermediate layer (repeatable)")
    p.add_argument("--templates", help="zero-shot templates for CLIP models: openai (default), simple, or a file")
    p.add_argument("--er", type=Path, help="er.csv of `clipshift er` (for the kurtosis-vs-ER plot)")
    p.add_argument("--out", type=Path, help="output folder (default: the --run directory; required with --model)")
    p.add_argument("--max-images", type=int,
                   help="images per evaluation set, a seeded subsample (default 600 with --run, 10000 with --model)")
    p.add_argument("--concept-images", type=int,
                   help="images with concept labels (default 1200 with --run, 5000 Broden images with --model)")
    p.add_argument("--outlier-ratio", type=float, default=OUTLIER_RATIO,
                   help=f"outlier: mean |activation| above this multiple of the median dimension's (default {OUTLIER_RATIO:g})")
    p.add_argument("--auc-threshold", type=float, default=AUC_THRESHOLD,
                   help=f"a concept is encoded at held-out AUC >= this (default {AUC_THRESHOLD:g})")
    p.add_argument("--ks", default=",".join(map(str, DEFAULT_KS)), help="numbers of dimensions to prune")
    p.add_argument("--random-repeats", type=int, default=5, help="random-pruning draws per k (default 5)")
    p.add_argument("--summary-k", type=int, default=4, help="k quoted in the summary (default 4)")
    p.add_argument("--cka-batch-size", type=int, help="minibatch CKA with this batch size (default: full linear CKA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="activation cache (default OUT/cache with --model)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_probe)
    return p


def _config(args):
    from .analysis import ProbeConfig

    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
    except ValueError:
        raise ValueError(f"--ks: expected comma-separated integers, got {args.ks!r}") from None
    return ProbeConfig(outlier_ratio=args.outlier_ratio, ks=ks, random_repeats=args.random_repeats,
                       summary_k=args.summary_k, auc_threshold=args.auc_threshold, cka_batch_size=args.cka_batch_size,
                       seed=args.seed).validate()


def _print_summary(result, out: Path) -> None:
    s = result.summary
    for r in s.itertuples():
        concepts = (f", concepts encoded {r.concepts_encoded} (unique {r.concepts_unique})"
                    if "concepts_encoded" in s.columns else "")
        print(f"{r.model}: kurtosis {r.kurtosis_mean:.2f} ± {r.kurtosis_std:.2f} (excess {r.excess_kurtosis_mean:+.2f}), "
              f"{r.outliers} outlier dims (max {r.max_ratio:.1f}× median), top-1 {100 * r.id_accuracy:.1f}% "
              f"→ {100 * (r.id_accuracy - r.id_drop_largest):.1f}% with the {r.prune_k} largest dims pruned "
              f"({100 * (r.id_accuracy - r.id_drop_random):.1f}% random){concepts}")
    print(f"wrote {out / 'probe.csv'} and {len(result.figures)} figures in {out / 'figures'}")


def cmd_probe(args) -> int:
    config = _config(args)
    if args.run is not None:
        from .run import probe_run

        out = args.out or args.run
        result = probe_run(args.run, out, max_images=args.max_images or 600,
                           concept_images=args.concept_images or 1200, config=config, progress=not args.quiet)
        if args.layer:
            print("note: --layer is used with --model; the quickstart probe reads h only")
        _print_summary(result, Path(out))
        return 0
    return _probe_models(args, config)


def _subsample(suite, n: int, seed: int):
    import numpy as np

    if len(suite.samples) <= n:
        return suite
    keep = np.sort(np.random.default_rng([seed, len(suite.name)]).permutation(len(suite.samples))[:n])
    return replace(suite, samples=[suite.samples[i] for i in keep])


def _probe_models(args, config) -> int:
    import pandas as pd
    import torch

    from ..data.imagenet import open_suites, score
    from ..distributed import default_device
    from ..evaluate.real import imagenet_class_names, resolve_templates, zero_shot_head
    from ..models.load import load_model
    from .activations import classifier_head, collect_activations, zero_shot_classifier
    from .analysis import ModelProbe, analyze, markdown_section, write_outputs
    from .concepts import load_broden

    start = time.perf_counter()
    if args.out is None:
        raise ValueError("--out is required with --model")
    pretrained = args.pretrained or []
    if pretrained and len(pretrained) != len(args.model):
        raise ValueError(f"give --pretrained once per --model, in order ({len(args.model)} models, "
                         f"{len(pretrained)} --pretrained; 'none' for a checkpoint folder)")
    pretrained = [None if p in (None, "", "none") else p for p in pretrained] or [None] * len(args.model)
    max_images = args.max_images or 10000
    suites = [_subsample(suite, max_images, args.seed)
              for suite in open_suites(args.datasets, args.data_root, dataset_roots(args.dataset_root))]
    broden = None
    if args.broden is not None:
        categories = [c.strip() for c in args.broden_categories.split(",")] if args.broden_categories else None
        broden = load_broden(args.broden, categories=categories, max_images=args.concept_images or 5000,
                             seed=args.seed, workers=args.workers)
    device = torch.device(args.device) if args.device != "auto" else default_device()
    out = Path(args.out)
    cache = None if args.no_cache else (Path(args.cache_dir) if args.cache_dir else out / "cache")
    common = dict(cache_dir=cache, batch_size=args.batch_size, workers=args.workers, device=device,
                  progress=not args.quiet)
    probes, concept_labels = [], None
    for model_name, tag in zip(args.model, pretrained):
        model = load_model(model_name, tag)
        sets, layer_stats = {}, {}
        for suite in suites:  # hooked layers on the in-distribution set only
            acts = collect_activations(model, suite, layers=args.layer if suite is suites[0] else (),
                                       desc=f"{suite.name} ({model.name})", **common)
            sets[suite.name] = (acts.features, acts.targets)
            if suite is suites[0]:
                layer_stats = acts.layers
        if model.kind == "clip":
            templates = resolve_templates(args.templates)
            head = zero_shot_classifier(zero_shot_head(model, imagenet_class_names(), templates, cache_dir=cache,
                                                       device=device, progress=not args.quiet).to(device))
        else:
            head = classifier_head(model)
        scorers = {s.name: (lambda logits, targets, s=s: score(logits.cpu(), targets, s)["top1"]) for s in suites}
        concept_features = None
        if broden is not None:
            acts = collect_activations(model, broden.suite(), desc=f"broden ({model.name})", **common)
            concept_features = acts.features
            labels = broden.labels.iloc[acts.indices.numpy()].reset_index(drop=True)
            if concept_labels is not None and len(labels) != len(concept_labels):
                raise ValueError("the models decoded different numbers of Broden images; cannot compare their concepts")
            concept_labels = labels
        probes.append(ModelProbe(model.name, sets, _on(head, device), group=model.metadata.get("library", ""),
                                 scorers=scorers, concept_features=concept_features, layers=layer_stats))
    er = None
    if args.er is not None:
        table = pd.read_csv(args.er)
        er = table[table["dataset"] == "average"] if "dataset" in table.columns else table
    result = analyze(probes, suites[0].name, [s.name for s in suites[1:]], concept_labels=concept_labels, er=er,
                     config=config)
    write_outputs(result, out)
    result.facts = {"representation": "the image encoder output h (CLIP: encode_image; timm: pre-logits features)",
                    "images": f"up to {max_images} images per dataset ({', '.join(s.name for s in suites)}).",
                    "seconds": time.perf_counter() - start}
    from ..io import atomic_write_text

    atomic_write_text(out / "probe.md", markdown_section(result, heading="#"))
    _print_summary(result, out)
    return 0


def _on(head, device):
    """Run `head` on `device` and give CPU logits."""
    import torch

    def run(h: torch.Tensor) -> torch.Tensor:
        return head(h.to(device)).float().cpu()

    return run
