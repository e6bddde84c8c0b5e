"""``clipshift probe``: outlier features, pruning, concepts and CKA (Crabbé et al.) from the command line.

    clipshift probe --run runs/quickstart [--out DIR]
    clipshift probe --model ViT-B-32 --pretrained openai --model timm/resnet50 --pretrained a1_in1k \\
        --data-root DATA [--datasets imagenet,imagenet-r] [--broden DATA/broden1_224] [--er er.csv] --out DIR

The parser and the printed summary only: ``--run`` calls :func:`clipshift.probe.probe_run`, ``--model``
:func:`clipshift.probe.probe_models`. :func:`clipshift.cli.build_parser` registers it with
``add_parser(sub)``; building the parser loads neither torch nor open_clip.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import dataset_roots
from .probe import AUC_THRESHOLD, DEFAULT_KS, OUTLIER_RATIO, REAL_DATASETS


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


def _settings(args) -> dict:
    """The :class:`~clipshift.probe.analysis.ProbeConfig` settings given on the command line."""
    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
    except ValueError:
        raise ValueError(f"--ks: expected comma-separated integers, got {args.ks!r}") from None
    return dict(outlier_ratio=args.outlier_ratio, ks=ks, random_repeats=args.random_repeats,
                summary_k=args.summary_k, auc_threshold=args.auc_threshold, cka_batch_size=args.cka_batch_size,
                seed=args.seed)


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
    from .probe.analysis import ProbeConfig

    config = ProbeConfig(**_settings(args)).validate()
    if args.run is not None:
        from .probe import probe_run

        out = args.out or args.run
        result = probe_run(args.run, out, max_images=args.max_images or 600,
                           concept_images=args.concept_images or 1200, config=config, progress=not args.quiet)
        if args.layer:
            print("note: --layer is used with --model; the quickstart probe reads h only")
        _print_summary(result, Path(out))
        return 0
    if args.out is None:
        raise ValueError("--out is required with --model")
    from .probe import probe_models

    categories = [c.strip() for c in args.broden_categories.split(",")] if args.broden_categories else None
    result = probe_models(args.model, args.datasets, out=args.out, pretrained=args.pretrained,
                          data_root=args.data_root, dataset_roots=dataset_roots(args.dataset_root),
                          max_images=args.max_images or 10000, broden=args.broden, broden_categories=categories,
                          concept_images=args.concept_images or 5000, layers=args.layer, templates=args.templates,
                          er=args.er, config=config, cache_dir=args.cache_dir, cache=not args.no_cache,
                          batch_size=args.batch_size, workers=args.workers, device=args.device,
                          progress=not args.quiet)
    _print_summary(result, Path(args.out))
    return 0
