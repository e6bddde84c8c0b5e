"""``clipshift eval --models FILE``: many checkpoints, one decode (:mod:`clipshift.evaluate.many`), and
``--plan``: the same work as one command line per model for a scheduler."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

from .io import atomic_write_text

# options that name the models, the plan or the output, or that a one-model line does not need
NOT_PASSED = {"help", "model", "models", "pretrained", "name", "plan", "only", "out", "models_at_once"}


def passed_options(args) -> list[str]:
    """The eval options given on this command line (those that differ from their defaults), as argv,
    for the plan's lines; the models, --plan, --only and --out left out."""
    argv: list[str] = []
    for action in args.eval_parser._actions:  # noqa: SLF001  (argparse's list of options)
        value = getattr(args, action.dest, None)
        if action.dest in NOT_PASSED or not action.option_strings or value is None or value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:
            argv.append(flag)
        else:
            for item in value if isinstance(value, list) else [value]:
                argv += [flag, str(item)]
    return argv


def write_plan(args, ids: list[str]) -> Path:
    """``OUT/plan.sh``: one ``clipshift eval --models FILE --only ID ...`` line per model (independent:
    any order, in parallel), then the line that builds ``OUT/results.csv`` from their results files."""
    common = ["clipshift", "eval", "--models", str(args.models), *passed_options(args)]
    out = ["--out", str(args.out)]
    quote = " ".join
    lines = ["#!/usr/bin/env bash",
             f"# clipshift eval of {len(ids)} models: run block 1's lines in any order or in parallel (a job",
             "# array, a queue), each scoring one model on every dataset; then block 2 builds results.csv.",
             "set -euo pipefail", "", f"# 1. one line per model ({len(ids)})",
             *[quote(shlex.quote(a) for a in [*common, "--only", i, *out]) for i in ids], "",
             "# 2. the long table: OUT/results.csv from every model's results files (scores any still missing)",
             quote(shlex.quote(a) for a in [*common, "--models-at-once", str(args.models_at_once), *out])]
    path = Path(args.out) / "plan.sh"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def cmd_eval_many(args, eval_suites: Callable) -> int:
    """`clipshift eval --models FILE` (`eval_suites`: the suites, class names and templates of the
    command line, as for one model)."""
    from .evaluate.many import RESULTS_DIR, read_model_list

    if args.pretrained or args.name:
        raise ValueError("--models: give each model's weights and name in the list file (`model [pretrained] "
                         "[name=ID]` per line), not --pretrained / --name")
    entries = read_model_list(args.models)
    if args.plan:
        path = write_plan(args, [e.id for e in entries])
        print(f"plan: {path} ({len(entries)} model lines, then the line that builds results.csv); "
              "nothing was loaded or decoded")
        return 0
    from .distributed import init_distributed_from_env

    rank, _ = init_distributed_from_env()
    suites, class_names, world_templates = eval_suites(args)
    table = _evaluate(args, entries, suites, class_names, world_templates, rank)
    if rank == 0:
        out = Path(args.out)
        if table is None:
            print(f"results of {args.only}: {out / RESULTS_DIR} (results.csv is built by the plan's last line)")
        else:
            print(f"results: {out / 'results.csv'} ({len(entries)} models x {len(suites)} datasets; "
                  f"each pair's rows under {out / RESULTS_DIR})")
    return 0


def _evaluate(args, entries, suites, class_names, world_templates, rank: int):
    import torch

    from .distributed import default_device
    from .evaluate.heads import resolve_templates
    from .evaluate.many import ManyOptions, evaluate_models

    out = Path(args.out)
    options = ManyOptions(
        templates=world_templates if world_templates and not args.templates else resolve_templates(args.templates),
        class_names=class_names, cache_dir=None if args.no_cache else Path(args.cache_dir or out / "cache"),
        batch_size=args.batch_size, workers=args.workers,
        device=torch.device(args.device) if args.device != "auto" else default_device(), strict=args.strict,
        amp=not args.no_amp, progress=not args.quiet, extra={"group": args.group} if args.group else {},
        per_class=args.per_class, save_predictions=args.save_predictions or args.save_logits,
        keep_logits=args.save_logits, models_at_once=args.models_at_once)
    return evaluate_models(entries, suites, out, options, only=args.only,
                           log=print if rank == 0 else (lambda line: None))
