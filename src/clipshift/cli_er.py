"""``clipshift er``: effective robustness of every model in a results table above a baseline.

    clipshift er --results TABLE [--baseline TABLE] [--id-dataset imagenet[,B]] [--shifts ...] --out DIR

Reusable by other commands: :func:`add_er_options` puts the option set on any parser, and
:func:`compute_er` turns the parsed options into ``(er, fits)`` without writing or printing anything.
"""

from __future__ import annotations

import argparse
import json
import warnings
from importlib import resources
from pathlib import Path

from .options import comma_list, parse_pairs

DESCRIPTION = ("Effective robustness (Taori et al. 2020; over several id test sets, Shi et al. 2023) from this "
               "project's results.csv or a published table: open_clip's openclip_results.csv, a folder of timm "
               "results-*.csv files, CLIP_benchmark JSON (a file or a folder) or its built CSV, JSON lines with one "
               "object per model, or any long table whose columns are named with --model-column, --dataset-column "
               "and --value-column.")


class _Formatter(argparse.HelpFormatter):
    """Wraps the description's paragraphs, keeps its line breaks (the shipped tables' lines)."""

    def _fill_text(self, text, width, indent):
        import textwrap

        out = []
        for line in text.splitlines():
            lead = indent + line[:len(line) - len(line.lstrip())]
            out.append(textwrap.fill(line.strip(), width, initial_indent=lead,
                                     subsequent_indent=lead + ("  " if lead.strip(" ") != lead else "")))
        return "\n".join(out)


def shipped_tables() -> str:
    """One line per published table shipped with the package (source, version, licence, models), read from
    its manifest without importing pandas; for ``--help``."""
    path = resources.files("clipshift").joinpath("robustness", "published_tables", "manifest.json")
    try:
        tables = json.loads(path.read_text(encoding="utf-8"))["tables"]
    except (OSError, ValueError, KeyError) as error:  # a broken install: say so, still parse
        return f"shipped tables (--baseline published, --compare NAME): not readable ({error})"
    lines = ["shipped tables (--baseline published, --compare NAME; offline):"]
    for entry in tables.values():
        base = f"; {entry['in1k_only_models']} trained on ImageNet-1k alone, the baseline" \
            if "in1k_only_models" in entry else ""
        lines.append(f"  {entry['title']} ({entry['models']} models{base}): {entry['upstream']}, "
                     f"{entry['upstream_path']}; {entry['version']}; licence {entry['licence']}")
    return "\n".join(lines)


def _percent(x: float) -> str:
    return f"{100 * x:+.1f}"


def results_options(args) -> dict | None:
    """How the --results table's columns are named (--model-column, --dataset-column, --value-column,
    --where), for read_results; None when none is given (the format is detected)."""
    options = {"model_columns": comma_list(args.model_column), "dataset_column": args.dataset_column,
               "value_column": args.value_column,
               "where": parse_pairs(args.where, "--where", "COL=VALUE") or None}
    options = {k: v for k, v in options.items() if v is not None}
    return options or None


def add_er_options(parser: argparse.ArgumentParser, *, out_help: str = "folder for er.csv, fits.csv and the plots",
                   ) -> argparse.ArgumentParser:
    """The options of ``clipshift er`` (tables, baseline, datasets, fit, bootstrap, --out) on `parser`;
    :func:`compute_er` reads them back."""
    parser.add_argument("--results", required=True, type=Path, action="append", metavar="TABLE",
                        help="results table (file or folder); repeat it for several tables, whose models are all "
                             "yours (a model may be in one of them only; the reading options apply to each)")
    parser.add_argument("--model-column", metavar="COL[,COL...]",
                        help="--results is a long table: the column(s) naming the model, several joined with '/' "
                             "(default model, and pretrained when present)")
    parser.add_argument("--dataset-column", metavar="COL", help="--results is a long table: its dataset column")
    parser.add_argument("--value-column", metavar="COL",
                        help="--results is a long table: its accuracy column (default value, top1 or acc1)")
    parser.add_argument("--where", action="append", metavar="COL=VALUE",
                        help="--results is a long table: keep its rows whose COL is VALUE (repeatable)")
    parser.add_argument("--baseline", metavar="TABLE|published",
                        help="table of baseline models (format detected), or 'published': the shipped timm models "
                             "trained on ImageNet-1k alone (a folder named published: ./published); default: rows "
                             "of --results whose group is 'baseline'")
    parser.add_argument("--compare", action="append", metavar="NAME[,NAME...]",
                        help="reference models beside yours, never in the fit: published (every shipped model), "
                             "openclip, timm, or a results file (repeatable or comma-separated)")
    parser.add_argument("--baseline-filter",
                        help="keep baseline models whose id matches this regular expression, or 'in1k-only' "
                             "(timm models trained on ImageNet-1k alone, by their pretrained tag)")
    parser.add_argument("--id-dataset", default="imagenet",
                        help="in-distribution dataset (default: imagenet), or several comma-separated (A,B): ER "
                             "above the plane fitted over all of them (Shi et al. 2023)")
    parser.add_argument("--id-for", action="append", metavar="SHIFT=DATASET",
                        help="another id dataset for one shift, e.g. imagenet-r=imagenet-r-classes (repeatable; "
                             "one id dataset only)")
    parser.add_argument("--shifts", help="comma-separated shift datasets (default: the natural shifts present for "
                                         "imagenet, else every other dataset)")
    parser.add_argument("--transform", default="logit", choices=("logit", "probit"))
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--baseline-strata", metavar="COL",
                        help="stratified bootstrap: resample the baseline models within each value of this "
                             "metadata column (e.g. train_distribution), so every draw keeps each group's number "
                             "of models")
    parser.add_argument("--allow-mixed-protocols", action="store_true",
                        help="fit and compare rows of one dataset measured under different protocols (class "
                             "space, number of images, ObjectNet's crop, ImageNet-V2's variant); refused by default")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path, help=out_help)
    return parser


def baseline_table(value: str | None):
    """--baseline's value: None, ``"published"`` (the shipped tables, see :mod:`clipshift.robustness.published`)
    or a path."""
    if value is None or value.strip().lower() == "published":
        return value and "published"
    return Path(value)


def compute_er(args):
    """``(er, fits)`` for options parsed by a parser carrying :func:`add_er_options`; nothing written or
    printed (the readers' notes are in ``er.attrs["notes"]``)."""
    from .robustness import effective_robustness
    from .robustness.tables import BASELINE_SELECTORS

    selector = BASELINE_SELECTORS.get(args.baseline_filter, args.baseline_filter)
    ids = comma_list(args.id_dataset) or ["imagenet"]
    id_for = {k: v.strip() for k, v in parse_pairs(args.id_for, "--id-for", "SHIFT=DATASET").items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = args.results[0] if len(args.results) == 1 else list(args.results)
        er, fits = effective_robustness(results, baseline_table(args.baseline),
                                        id_dataset=ids[0] if len(ids) == 1 else ids, compare=args.compare,
                                        shifts=comma_list(args.shifts), id_datasets=id_for, baseline_filter=selector,
                                        transform=args.transform, n_bootstrap=args.bootstrap, seed=args.seed,
                                        confidence=args.confidence, return_fits=True,
                                        results_options=results_options(args), baseline_strata=args.baseline_strata,
                                        allow_mixed_protocols=args.allow_mixed_protocols)
    return er, fits


def print_fits(fits, transform: str) -> None:
    """The baseline fits, one line per dataset."""
    from .robustness import WEIGHT_PREFIX
    from .robustness.transforms import CLIP_EPSILON

    print(f"baseline: {int(fits['num_models'].max())} models; {transform} fits "
          f"(accuracies of exactly 0 or 1 clipped to [{CLIP_EPSILON:g}, 1 - {CLIP_EPSILON:g}]):")
    weights = [c for c in fits.columns if c.startswith(WEIGHT_PREFIX)]
    for fit in fits.to_dict("records"):
        if weights:
            terms = ", ".join(f"{c[len(WEIGHT_PREFIX):]} {fit[c]:.3f}" for c in weights)
            print(f"  {fit['dataset']:<18} weights {terms}  intercept {fit['intercept']:7.3f}  R² {fit['r2']:.3f}  "
                  f"({fit['num_models']} models)")
        else:
            print(f"  {fit['dataset']:<18} vs {fit['id_dataset']:<12} slope {fit['slope']:6.3f}  intercept "
                  f"{fit['intercept']:7.3f}  R² {fit['r2']:.3f}  ({fit['num_models']} models)")


def print_summary(er, fits, args) -> None:
    """Notes, fits, protocols, skipped shifts and the models of highest average ER, as `clipshift er` prints."""
    for note in er.attrs.get("notes", []):
        print(f"note: {note}")
    print_fits(fits, args.transform)
    if er.attrs.get("protocols"):
        print("protocols (per dataset; each row's prompts and preprocessing are in the results' protocol column):")
        for dataset, protocol in er.attrs["protocols"].items():
            print(f"  {dataset:<18} {protocol}")
    if er.attrs.get("skipped_shifts"):
        print(f"skipped (fewer than 2 baseline models with results): {', '.join(er.attrs['skipped_shifts'])}")
    ids = comma_list(args.id_dataset) or ["imagenet"]
    avg = er[(er["dataset"] == "average") & ~er["is_baseline"]]
    if "role" in avg and (avg["role"] == "user").any():  # the user's models; the reference models in a line
        refs = avg[avg["role"] == "reference"]
        if len(refs):
            top = refs.loc[refs["effective_robustness"].idxmax()]
            print(f"reference models (never in the fit): {len(refs)} with an average ER, in er.csv (role "
                  f"reference); highest {_percent(top['effective_robustness'])} pp, {top['model']}")
        avg = avg[avg["role"] == "user"]
    avg = avg.nlargest(getattr(args, "top", 10), "effective_robustness")
    if len(avg):
        print(f"highest average effective robustness (pp, {100 * args.confidence:g}% interval):")
        for row in avg.to_dict("records"):
            id_text = (f"id {100 * row['id_accuracy']:.1f}%" if len(ids) == 1 else
                       ", ".join(f"{d} {100 * row[f'id_accuracy_{d}']:.1f}%" for d in ids))
            print(f"  {_percent(row['effective_robustness']):>6} [{_percent(row['ci_low'])}, "
                  f"{_percent(row['ci_high'])}]  {row['model']}  ({id_text}, shifts {100 * row['shift_accuracy']:.1f}%)")


def cmd_er(args) -> int:
    from .io import atomic_write_text
    from .robustness import plot_all
    from .robustness.explore import write_explorer

    er, fits = compute_er(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "er.csv", er.to_csv(index=False))
    atomic_write_text(out / "fits.csv", fits.to_csv(index=False))
    figures = plot_all(er, fits, out, transform=args.transform)
    page = write_explorer(er, fits, out, transform=args.transform)  # the same, interactive: explore.html
    print_summary(er, fits, args)
    print(f"wrote {out / 'er.csv'}, {out / 'fits.csv'} and {len(figures)} plots in {out}; every model "
          f"interactively: {page}")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """The ``er`` sub-command on `sub` (the sub-parsers of ``clipshift``)."""
    er = sub.add_parser("er", help="effective robustness of every model in a results table above a baseline",
                        description=DESCRIPTION + "\n\n" + shipped_tables(), formatter_class=_Formatter)
    add_er_options(er)
    er.add_argument("--top", type=int, default=10, help="models listed in the printed summary (default 10)")
    er.set_defaults(func=cmd_er)
    return er
