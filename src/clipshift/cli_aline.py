"""``clipshift aline``: shift accuracy without shift labels, by agreement on the line (Baek et al. 2022).

    clipshift aline --predictions preds.npz [--id-dataset ID] [--shifts a,b] [--baseline REGEX] --out DIR
    clipshift aline --run runs/quickstart --out DIR
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from .options import comma_list


def _inputs(args) -> tuple[list, dict, dict, dict]:
    """(models, predictions, labels, groups) from --predictions or --run (scored and saved to OUT)."""
    if args.predictions is not None:
        from .robustness.agreement_table import read_prediction_file

        models, predictions, labels = read_prediction_file(args.predictions)
        return models, predictions, labels, {}
    from .robustness.agreement_run import run_predictions
    from .robustness.agreement_table import write_prediction_file

    models, predictions, labels, groups = run_predictions(args.run)
    path = write_prediction_file(Path(args.out) / "predictions.npz", models, predictions, labels)
    print(f"predictions of {len(models)} models on {', '.join(predictions)}: {path}")
    return models, predictions, labels, groups


def _id_dataset(args, predictions: dict, labels: dict) -> str:
    if args.id_dataset:
        return args.id_dataset
    if args.run is not None:
        return "test"
    labelled = [d for d in predictions if d in labels]
    if len(labelled) != 1:
        raise ValueError(f"--id-dataset: name the labelled ID set (datasets with labels: {labelled or 'none'})")
    return labelled[0]


def _baseline(args, models: list, groups: dict) -> list | None:
    if args.baseline:
        chosen = [m for m in models if re.search(args.baseline, m)]
        if len(chosen) < 2:
            raise ValueError(f"--baseline {args.baseline!r}: matches {len(chosen)} model(s) {chosen}; need at least 2")
        return chosen
    chosen = [m for m in models if groups.get(m) == "baseline"]
    return chosen if len(chosen) >= 2 else None


def _pp(x: float) -> str:
    return "  n/a" if x != x else f"{100 * x:5.1f}"


def _print_summary(table, fits, baseline) -> None:
    for fit in fits.to_dict("records"):
        verdict = ("holds" if fit["holds"] else
                   f"DOES NOT HOLD (R² < {fit['min_r2']:g}): its estimates are not reliable")
        print(f"  {fit['dataset']:<14} slope {fit['slope']:6.3f}  intercept {fit['intercept']:7.3f}  "
              f"R² {fit['r2']:.3f}  {verdict}")
    labelled = fits.dropna(subset=["mae_aline_d"])
    if len(labelled):
        print("mean absolute error (pp) where labels exist:   naive  ALine-S  ALine-D")
        for fit in labelled.to_dict("records"):
            mark = "" if fit["holds"] else "   (agreement not on the line)"
            print(f"  {fit['dataset']:<44}{_pp(fit['mae_naive'])}    {_pp(fit['mae_aline_s'])}    "
                  f"{_pp(fit['mae_aline_d'])}{mark}")
    print("shift accuracy (%), ALine-D estimate [true]; * agreement not on the line" +
          ("; ER from the estimates, pp" if baseline else ""))
    for model, rows in table.groupby("model", sort=False):
        cells = []
        for row in rows.to_dict("records"):
            true = "" if row["shift_accuracy"] != row["shift_accuracy"] else f" [{100 * row['shift_accuracy']:.1f}]"
            er = f" ER {100 * row['er_aline_d']:+.1f}" if baseline else ""
            cells.append(f"{row['dataset']} {100 * row['aline_d']:.1f}{true}{'' if row['reliable'] else '*'}{er}")
        print(f"  {model} (ID {100 * rows['id_accuracy'].iloc[0]:.1f}): " + ", ".join(cells))


def cmd_aline(args) -> int:
    from .io import atomic_write_text
    from .robustness.agreement import AgreementWarning
    from .robustness.agreement_table import agreement_on_the_line

    models, predictions, labels, groups = _inputs(args)
    id_dataset = _id_dataset(args, predictions, labels)
    baseline = _baseline(args, models, groups)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AgreementWarning)
        table, fits = agreement_on_the_line(predictions, labels, models, id_dataset=id_dataset,
                                            shifts=comma_list(args.shifts), baseline_models=baseline,
                                            transform=args.agreement_transform, er_transform=args.transform,
                                            min_r2=args.min_r2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "aline.csv", table.to_csv(index=False))
    atomic_write_text(out / "aline_fits.csv", fits.to_csv(index=False))
    print(f"agreement lines ({args.agreement_transform}, {len(models)} models, {int(fits['num_pairs'].iloc[0])} "
          f"pairs, ID {id_dataset}):")
    _print_summary(table, fits, baseline)
    for warning in caught:
        print(f"warning: {warning.message}")
    print(f"wrote {out / 'aline.csv'} and {out / 'aline_fits.csv'}")
    return 0


def add_parser(sub) -> None:
    """The ``aline`` sub-command's parser, added to `sub` (the ``clipshift`` sub-parsers)."""
    al = sub.add_parser("aline", help="shift accuracy and effective robustness without shift labels "
                                      "(agreement on the line, ALine-S / ALine-D)",
                        description="Estimate each model's accuracy on unlabelled shift sets from how often pairs of "
                                    "models agree (Baek et al., NeurIPS 2022): ALine-S and ALine-D, the agreement "
                                    "fit's R² per shift (with a warning where it is below --min-r2: agreement-on-the-"
                                    "line does not hold and the estimates are not reliable), effective robustness "
                                    "from the estimates against baseline models, and the true accuracies beside the "
                                    "estimates where labels exist. Needs at least 3 models.")
    source = al.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, metavar="FILE",
                        help="prediction file (.npz: models, predictions/<dataset> (models × images) predicted "
                             "classes, labels/<dataset> where known; see docs/effective-robustness.md)")
    source.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="a quickstart run folder: its models' predictions on its world's sets (as the run "
                             "wrote them, else its checkpoints scored again; saved to OUT/predictions.npz); "
                             "baseline: the models of group 'baseline'")
    al.add_argument("--id-dataset", help="the labelled ID set (default: test with --run, else the only labelled set)")
    al.add_argument("--shifts", help="comma-separated shift sets (default: every other dataset)")
    al.add_argument("--baseline", metavar="REGEX", help="baseline models: those whose name matches REGEX")
    al.add_argument("--transform", default="logit", choices=("logit", "probit"),
                    help="the effective-robustness line's transform (default logit, as clipshift er)")
    al.add_argument("--agreement-transform", default="probit", choices=("probit", "logit"),
                    help="the agreement fits' transform (default probit, as Baek et al.)")
    al.add_argument("--min-r2", type=float, default=0.95,
                    help="agreement-on-the-line holds when the agreement fit's R² is at least this (default 0.95)")
    al.add_argument("--out", required=True, type=Path, help="folder for aline.csv and aline_fits.csv")
    al.set_defaults(func=cmd_aline)

