"""The ``clipshift`` command: a thin front door over the Python API.

    clipshift quickstart --out runs/quickstart [--preset tiny] [--config FILE] [key=value ...]
    clipshift world --out DIR [--preset tiny] [--config FILE] [key=value ...]
    clipshift train CONFIG.yaml [key=value ...] [--resume]
    clipshift study [CONFIG.yaml] --out DIR [--quick] [--plan [--slurm]] [key=value ...]
    clipshift report RUN_DIR [--out FILE]
    clipshift finetune CONFIG.yaml [key=value ...] [--resume]
    clipshift eval --model M [--pretrained P] | --models FILE [--plan] [--datasets a,b] --data-root DIR | --world DIR --out DIR
    clipshift probe --run runs/quickstart | --model M --pretrained P ... --data-root DIR --out DIR
    clipshift er --results TABLE [--baseline TABLE|published] [--compare NAME] [--id-dataset imagenet[,B]] --out DIR
    clipshift aline --predictions FILE.npz | --run RUN_DIR [--id-dataset ID] [--baseline REGEX] --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from .options import dataset_roots


def _overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs (values parsed as YAML: numbers, lists, mappings)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"error: expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"setting {pair!r}: the value is not valid YAML ({' '.join(str(error).split())}); "
                             f"quote it, e.g. {key}='\"{value}\"'") from None
    return out


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="default", help="default | tiny (a seconds-long smoke run)")
    parser.add_argument("--config", type=Path, help="YAML file overriding the preset")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. train_size=4000 seed=1")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or step lines")


def cmd_quickstart(args) -> int:
    from .recipes.quickstart import load_config, run_quickstart

    config = load_config(args.preset, args.config, _overrides(args.overrides))
    run_quickstart(config, args.out, progress=not args.quiet, quiet=args.quiet)
    return 0


def cmd_study(args) -> int:
    from .recipes.common.settings import read_settings
    from .recipes.study import load_study_config, run_study

    pairs, path = list(args.overrides), args.config
    if path is not None and "=" in str(path):  # `study --quick seeds=[0,1]`: no file, only settings
        pairs, path = [str(path), *pairs], None
    overrides = read_settings(None, _overrides(pairs))  # supervised.epochs=3 → {"supervised": {"epochs": 3}}
    config = load_study_config(path, overrides, quick=args.quick)
    run_study(config, args.out, progress=not args.quiet, quiet=args.quiet, plan_only=args.plan,
              torchrun=args.torchrun, evaluate_only=args.evaluate, prepare_only=args.prepare, slurm=args.slurm,
              slurm_args=args.slurm_args)
    return 0


def cmd_world(args) -> int:
    from .recipes.common.world import build_world
    from .recipes.quickstart import load_config

    config = load_config(args.preset, args.config, _overrides(args.overrides))
    summary = build_world(config.world(), Path(args.out), progress=not args.quiet)
    print(f"world: {summary['images_generated']} images written under {args.out} "
          "(training CSVs and ImageFolder evaluation sets; the adversarial set is made by `quickstart`, "
          "which trains the reference model it needs)")
    return 0


DEFAULT_EVAL_DATASETS = ("imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet")


def _eval_suites(args) -> tuple[dict, list | None, list | None]:
    """The suites `clipshift eval` scores, by the dataset name their rows get (--class-space), with the
    class names and templates the world needs (None for ImageNet-family data: the defaults)."""
    from .evaluate.real import with_class_space

    if args.world is None:
        datasets = args.datasets or ",".join(DEFAULT_EVAL_DATASETS)
        from .data.eval_sets import open_suites

        suites = open_suites(datasets, args.data_root, dataset_roots(args.dataset_root))
        return with_class_space(suites, args.class_space), None, None
    if args.class_space != "dataset":
        raise ValueError("--class-space full: the world's sets are scored over its classes already; it applies to "
                         "ImageNet-R, ImageNet-A and ObjectNet")
    from .data.eval_sets import open_world_sets
    from .world.captions import ZERO_SHOT_TEMPLATES
    from .world.shapes import CLASS_NAMES

    names = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None
    return with_class_space(open_world_sets(args.world, names)), list(CLASS_NAMES), list(ZERO_SHOT_TEMPLATES)


def cmd_eval(args) -> int:
    if args.models is not None:
        from .cli_eval_many import cmd_eval_many

        return cmd_eval_many(args, _eval_suites)
    if args.plan or args.only:
        raise ValueError(f"{'--plan' if args.plan else '--only'} goes with --models FILE (a list of models)")
    import torch

    from .distributed import default_device, init_distributed_from_env
    from .evaluate.per_class import PER_CLASS_COLUMNS
    from .evaluate.predictions import write_predictions
    from .evaluate.real import append_results, evaluate_model, resolve_templates
    from .models.load import load_model

    rank, size = init_distributed_from_env()
    suites, class_names, world_templates = _eval_suites(args)
    model = load_model(args.model, args.pretrained)
    if args.name:
        model.name = args.name
    device = torch.device(args.device) if args.device != "auto" else default_device()
    out = Path(args.out)
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    templates = None
    if model.kind == "clip":
        templates = world_templates if world_templates and not args.templates else resolve_templates(args.templates)
    per_class = [] if args.per_class else None
    predictions = [] if args.save_predictions or args.save_logits else None
    rows = evaluate_model(model, suites, templates=templates, class_names=class_names,
                          cache_dir=None if args.no_cache else cache, batch_size=args.batch_size, workers=args.workers,
                          device=device, strict=args.strict, amp=not args.no_amp, progress=not args.quiet,
                          extra={"group": args.group} if args.group else None, per_class=per_class,
                          predictions=predictions, keep_logits=args.save_logits)
    if rank == 0:
        append_results(rows, out / "results.csv")
        files = [write_predictions(out, model.name, record) for record in predictions or []]
        for row in rows:
            if row["metric"] == "top1":
                skipped = f", {row['images_skipped']} undecodable images skipped" if row["images_skipped"] else ""
                print(f"{row['model']} on {row['dataset']}: top-1 {100 * row['value']:.2f}% "
                      f"({row['num_examples']} images{skipped})")
        print(f"results: {out / 'results.csv'}" + (f" ({size} processes)" if size > 1 else ""))
        if per_class is not None:
            append_results(per_class, out / "per_class.csv", keys=("model", "dataset", "class_id"))
            print(f"per-class results ({', '.join(PER_CLASS_COLUMNS)}): {out / 'per_class.csv'} "
                  f"({len(per_class)} rows)")
        if files:
            print(f"per-image predictions{' with logits' if args.save_logits else ''}: {files[0].parent} "
                  f"({len(files)} files; read them with clipshift.evaluate.read_predictions)")
    return 0


def cmd_train(args) -> int:
    from .recipes.common.training import load_train_config, run_training

    config = load_train_config(args.config, _overrides(args.overrides))
    final = run_training(config, resume=args.resume, progress=not args.quiet)
    from .distributed import world

    if world()[0] == 0:
        print(f"model: {final}")
    return 0


def cmd_report(args) -> int:
    from .report_html import write_html_report

    print(f"report: {write_html_report(args.run_dir, args.out)}")
    return 0


def cmd_finetune(args) -> int:
    from .recipes.finetune import load_finetune_config, run_finetune

    config = load_finetune_config(args.config, _overrides(args.overrides))
    run_finetune(config, resume=args.resume, progress=not args.quiet, quiet=args.quiet)
    return 0


def _add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate an open_clip / timm / clipshift model on ImageNet and its shifts",
                        description="Zero-shot (CLIP) or classifier evaluation on ImageNet-family datasets laid out as "
                                    "distributed, or on the embedded world's exported sets (--world); appends top-1, "
                                    "top-5 and mean per-class recall to OUT/results.csv, and with --per-class the "
                                    "top-1 of every class to OUT/per_class.csv. "
                                    "Run under torchrun to shard every dataset across processes.")
    which = ev.add_mutually_exclusive_group(required=True)
    which.add_argument("--model",
                       help="open_clip name (ViT-B-32), hf-hub:ORG/NAME, timm/ARCH, or a clipshift checkpoint folder")
    which.add_argument("--models", type=Path, metavar="FILE",
                       help="a list of models, one `model [pretrained] [name=ID]` per line: every dataset decoded "
                            "once for all of them, a results file per model and dataset under OUT/results/ "
                            "(a rerun skips those written), OUT/results.csv built at the end")
    ev.add_argument("--models-at-once", type=int, default=8, metavar="N",
                    help="with --models: models held (and fed each decoded batch) at once (default 8)")
    ev.add_argument("--plan", action="store_true",
                    help="with --models: write OUT/plan.sh, one line per model for a scheduler and the line that "
                         "builds results.csv; nothing is loaded or decoded")
    ev.add_argument("--only", metavar="ID", help="with --models: score the model with this id alone (a line of "
                                                 "plan.sh); its results files only, not results.csv")
    ev.add_argument("--pretrained", help="open_clip / timm pretrained tag, or a local checkpoint file")
    ev.add_argument("--datasets",
                    help="comma-separated suites (default: ImageNet and the five shifts; with --world, the "
                         "world's evaluation sets present)")
    ev.add_argument("--world", type=Path, metavar="DIR",
                    help="evaluate on the embedded world exported under DIR (e.g. runs/quickstart/world: test, v2, "
                         "sketch, rendition, objectnet, adversarial) instead of ImageNet-family data")
    ev.add_argument("--per-class", action="store_true",
                    help="also write OUT/per_class.csv: top-1 per class (model, dataset, class, top1, "
                         "num_examples, class_id)")
    ev.add_argument("--save-predictions", action="store_true",
                    help="also write OUT/predictions/<model>/<dataset>.parquet: per image its id, target, top-5 "
                         "classes and scores, predicted class (clipshift.evaluate.read_predictions reads them)")
    ev.add_argument("--save-logits", action="store_true",
                    help="with the predictions, every scored class's score (implies --save-predictions)")
    ev.add_argument("--class-space", default="dataset", choices=("dataset", "full"),
                    help="dataset (default): ImageNet-R/-A score their 200 classes, ObjectNet its 125 mapped ones; "
                         "full: all 1000 compete, rows named imagenet-r-1000, imagenet-a-1000, objectnet-1000")
    ev.add_argument("--data-root", type=Path, help="folder where the datasets are unpacked (standard folder names)")
    ev.add_argument("--dataset-root", action="append", metavar="NAME=DIR",
                    help="one dataset's own root, e.g. imagenet-r=/data/imagenet-r (repeatable)")
    ev.add_argument("--templates", help="openai (80 templates, default), simple, or a file with one per line")
    ev.add_argument("--out", required=True, type=Path, help="folder of results.csv (appended) and the cache")
    ev.add_argument("--cache-dir", help="feature and zero-shot-head cache (default OUT/cache)")
    ev.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    ev.add_argument("--name", help="model id in results.csv (default: name/pretrained)")
    ev.add_argument("--group", help="value of the group column, e.g. baseline for the ER baseline")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--workers", type=int, default=4, help="data-loader worker processes")
    ev.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    ev.add_argument("--no-amp", action="store_true", help="full precision on GPU")
    ev.add_argument("--strict", action="store_true", help="an undecodable image is an error instead of skipped")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_eval, eval_parser=ev)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipshift", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser("quickstart", help="world → train → evaluate → effective robustness → report")
    quick.add_argument("--out", default="runs/quickstart", help="run directory (default: runs/quickstart)")
    _add_config_args(quick)
    quick.set_defaults(func=cmd_quickstart)
    st = sub.add_parser("study", help="the six-hypothesis study (Fang et al. 2022; Mayilvahanan et al.), seeds, "
                                      "verdicts beside the published findings, report",
                        description="Train every configuration of the six hypotheses (size at equal steps, "
                                    "distribution, language at training and at test time, the contrastive loss, "
                                    "exposure to the shift's own domain) with several seeds, fit the baseline, "
                                    "compute verdicts beside the published findings and write report.md and "
                                    "report.html. Re-running into the same folder resumes.")
    st.add_argument("config", nargs="?", type=Path, help="YAML configuration (e.g. configs/fang2022.yaml)")
    st.add_argument("overrides", nargs="*", help="key=value settings, e.g. seeds=[0,1,2,3] train_size=2000")
    st.add_argument("--out", default="runs/study", help="run directory (default: runs/study)")
    st.add_argument("--quick", action="store_true", help="a small version (tiny model and data) for tests and demos")
    st.add_argument("--plan", action="store_true", help="write DIR/plan.sh (blocks of commands: the world's set-up, "
                    "one clipshift train / evaluate command per model, the report) instead of training; "
                    "nothing is generated, trained or decoded")
    st.add_argument("--torchrun", type=int, default=0, metavar="N",
                    help="with --plan: training lines as `torchrun --nproc_per_node N -m clipshift train ...`")
    st.add_argument("--slurm", action="store_true", help="with --plan: also write DIR/plan.slurm; `bash plan.slurm` "
                    "submits one Slurm array job per block, each after the previous one (logs in DIR/slurm/)")
    st.add_argument("--slurm-args", default="", metavar="ARGS",
                    help='with --slurm: options for every sbatch call, e.g. "--partition gpu --gres gpu:1"')
    st.add_argument("--prepare", action="store_true", help="generate the world, train its reference model and "
                    "filter the adversarial set only (the plan's first line)")
    st.add_argument("--evaluate", metavar="NAME", help="evaluate the trained model NAME only (a line of plan.sh)")
    st.add_argument("--quiet", action="store_true")
    st.set_defaults(func=cmd_study)
    world = sub.add_parser("world", help="generate and export the embedded captioned world")
    world.add_argument("--out", required=True, help="folder for the CSVs and ImageFolder trees")
    _add_config_args(world)
    world.set_defaults(func=cmd_world)
    tr = sub.add_parser("train", help="train one model (contrastive, supervised, simclr, finetune) from a YAML config",
                        description="Train one model on a weighted mixture of data sources; see "
                                    "clipshift.recipes.common.training for the configuration. Run under torchrun for "
                                    "data-parallel training; --resume continues exactly from the last checkpoint.")
    tr.add_argument("config", type=Path, help="YAML configuration")
    tr.add_argument("overrides", nargs="*", help="dotted key=value settings, e.g. train.epochs=3 objective=supervised")
    tr.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    tr.add_argument("--quiet", action="store_true")
    tr.set_defaults(func=cmd_train)
    ft = sub.add_parser("finetune", help="fine-tune a CLIP model (full, linear probe, LP-FT), WiSE-FT, robustness report",
                        description="Fine-tune a CLIP model from its zero-shot classifier on labelled data, interpolate "
                                    "its weights with the zero-shot model (WiSE-FT), evaluate every model on the ID set "
                                    "and the shifts with effective robustness, and write a report; see "
                                    "clipshift.recipes.finetune.config for the configuration (configs/finetune_world.yaml).")
    ft.add_argument("config", type=Path, help="YAML configuration")
    ft.add_argument("overrides", nargs="*", help="dotted key=value settings, e.g. train.epochs=3 modes=[full]")
    ft.add_argument("--resume", action="store_true", help="continue training from OUT/train_state/<mode>/latest")
    ft.add_argument("--quiet", action="store_true")
    ft.set_defaults(func=cmd_finetune)
    _add_eval_parser(sub)
    from .cli_er import add_parser as add_er_parser

    add_er_parser(sub)
    rep = sub.add_parser("report", help="a run directory's report.md as one self-contained, printable report.html",
                         description="Render RUN_DIR/report.md to HTML with every figure embedded, the configuration "
                                     "and the versions appended; the file opens offline and prints cleanly.")
    rep.add_argument("run_dir", type=Path, help="run directory holding report.md (from quickstart or study)")
    rep.add_argument("--out", type=Path, help="HTML file to write (default RUN_DIR/report.html)")
    rep.set_defaults(func=cmd_report)
    from .cli_probe import add_parser as add_probe_parser
    from .cli_aline import add_parser as add_aline_parser
    from .cli_explore import add_parser as add_explore_parser

    add_probe_parser(sub)
    add_aline_parser(sub)
    add_explore_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value settings may also come after options (`train cfg.yaml --quiet epochs=3`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"clipshift {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
