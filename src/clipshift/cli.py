"""The ``clipshift`` command: a thin front door over the Python API.

    clipshift quickstart --out runs/quickstart [--preset tiny] [--config FILE] [key=value ...]
    clipshift world --out DIR [--preset tiny] [--config FILE] [key=value ...]
    clipshift er --results results.csv --id-dataset test --shifts v2,sketch --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def _overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs (values parsed as YAML: numbers, lists, mappings)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"error: expected key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="default", help="default | tiny (a seconds-long smoke run)")
    parser.add_argument("--config", type=Path, help="YAML file overriding the preset")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. train_size=4000 seed=1")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or step lines")


def cmd_quickstart(args) -> int:
    from .recipes.config import load_config
    from .recipes.quickstart import run_quickstart

    config = load_config(args.preset, args.config, _overrides(args.overrides))
    run_quickstart(config, args.out, progress=not args.quiet, quiet=args.quiet)
    return 0


def cmd_world(args) -> int:
    from .recipes.config import load_config
    from .recipes.quickstart import build_world

    config = load_config(args.preset, args.config, _overrides(args.overrides))
    summary = build_world(config, Path(args.out), progress=not args.quiet)
    print(f"world: {summary['images_generated']} images written under {args.out} "
          "(training CSVs and ImageFolder evaluation sets; the adversarial set is made by `quickstart`, "
          "which trains the reference model it needs)")
    return 0


def cmd_er(args) -> int:
    import pandas as pd

    from .models.factory import atomic_write_text
    from .robustness import compute_effective_robustness, plot_all

    results = pd.read_csv(args.results)
    if "group" not in results.columns:
        raise SystemExit(f"error: {args.results} has no 'group' column marking the baseline models")
    baseline = sorted(results.loc[results["group"] == "baseline", "model"].unique())
    shifts = args.shifts.split(",") if args.shifts else sorted(set(results["dataset"]) - {args.id_dataset})
    er, fits = compute_effective_robustness(results, args.id_dataset, shifts, baseline_models=baseline,
                                            transform=args.transform)
    out = Path(args.out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "er.csv", er.to_csv(index=False))
    atomic_write_text(out / "fits.csv", fits.to_csv(index=False))
    plot_all(er, fits, out / "figures")
    print(f"wrote {out / 'er.csv'}, {out / 'fits.csv'} and figures under {out / 'figures'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipshift", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    quick = sub.add_parser("quickstart", help="world → train → evaluate → effective robustness → report")
    quick.add_argument("--out", default="runs/quickstart", help="run directory (default: runs/quickstart)")
    _add_config_args(quick)
    quick.set_defaults(func=cmd_quickstart)
    world = sub.add_parser("world", help="generate and export the embedded captioned world")
    world.add_argument("--out", required=True, help="folder for the CSVs and ImageFolder trees")
    _add_config_args(world)
    world.set_defaults(func=cmd_world)
    er = sub.add_parser("er", help="effective robustness from a long results.csv with a 'group' column")
    er.add_argument("--results", required=True, type=Path)
    er.add_argument("--id-dataset", default="test")
    er.add_argument("--shifts", help="comma-separated shift datasets (default: all others)")
    er.add_argument("--transform", default="logit", choices=("logit", "probit"))
    er.add_argument("--out", required=True)
    er.set_defaults(func=cmd_er)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"clipshift {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
