"""Agreement on the line validated on the embedded world, where every shift label is known.

For each quickstart run folder: every evaluated model's per-image predictions on `test` and the five
shifts (its checkpoint scored through the evaluation loop with the head of its results row; saved to
OUT/<run>/predictions.npz and reused when present), a check that they reproduce the run's
results.csv top-1 (the same models, heads and images as the quickstart), then ALine-S, ALine-D and
the naive estimate (shift accuracy = ID accuracy) on every shift with the shift labels hidden, and
their mean absolute error against the true accuracies, beside the agreement fit's R² (probit).

Target (issue 24, part 3): on every shift where agreement-on-the-line holds (agreement fit R² ≥
0.95), ALine-D's mean absolute error ≤ 3 pp and below the naive estimate's.

    .venv/bin/python benchmarks/validate_aline.py runs/quickstart [runs/qs1 ...] --out runs/aline-validation
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from clipshift.robustness.agreement import AgreementWarning, accuracy
from clipshift.robustness.agreement_run import run_predictions
from clipshift.robustness.agreement_table import agreement_on_the_line, read_prediction_file, write_prediction_file

ID_DATASET = "test"
TARGET_PP = 3.0


def predictions_of(run: Path, out: Path) -> tuple[list, dict, dict, dict]:
    """(models, predictions, labels, groups) of a run folder, scored once and then read from OUT."""
    path = out / "predictions.npz"
    groups = pd.read_csv(run / "results.csv").drop_duplicates("model").set_index("model")["group"].to_dict()
    if path.exists():
        models, predictions, labels = read_prediction_file(path)
        return models, predictions, labels, {m: groups.get(m, "") for m in models}
    models, predictions, labels, groups = run_predictions(run)
    write_prediction_file(path, models, predictions, labels)
    return models, predictions, labels, groups


def check_against_results(run: Path, models: list, predictions: dict, labels: dict) -> float:
    """Largest |top-1 from the predictions − results.csv top-1| over models and datasets."""
    results = pd.read_csv(run / "results.csv")
    top1 = results[results["metric"] == "top1"].set_index(["model", "dataset"])["value"]
    worst = 0.0
    for name, preds in predictions.items():
        for model, acc in zip(models, accuracy(preds, labels[name])):
            worst = max(worst, abs(float(acc) - float(top1[(model, name)])))
    return worst


def validate(run: Path, out: Path) -> pd.DataFrame:
    start = time.perf_counter()
    models, predictions, labels, groups = predictions_of(run, out)
    seconds = time.perf_counter() - start
    worst = check_against_results(run, models, predictions, labels)
    baseline = [m for m in models if groups.get(m) == "baseline"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)  # the table says where it does not hold
        table, fits = agreement_on_the_line(predictions, labels, models, id_dataset=ID_DATASET,
                                            baseline_models=baseline)
    table.to_csv(out / "aline.csv", index=False)
    fits.to_csv(out / "aline_fits.csv", index=False)
    er = table.groupby("dataset", sort=False).apply(lambda t: (t["er_aline_d"] - t["er_true"]).abs().mean(),
                                                    include_groups=False)
    print(f"\n{run}: {len(models)} models ({len(baseline)} baseline), {len(labels[ID_DATASET])} images per set; "
          f"predictions in {seconds:.0f} s; largest |top-1 − results.csv| {worst:.1e}")
    summary = fits[["dataset", "r2", "accuracy_r2", "holds"]].copy()
    for name in ("naive", "aline_s", "aline_d"):
        summary[f"mae_{name}"] = 100 * fits[f"mae_{name}"]
    summary["mae_er_aline_d"] = 100 * summary["dataset"].map(er)
    summary["target"] = np.where(~summary["holds"], "n/a (not on the line)",
                                 np.where((summary["mae_aline_d"] <= TARGET_PP) &
                                          (summary["mae_aline_d"] < summary["mae_naive"]), "met", "MISSED"))
    summary.insert(0, "run", run.name)
    print("| shift | agreement R² | accuracy R² | holds | MAE naive (pp) | ALine-S | ALine-D | ER error, ALine-D | "
          "target |\n|---|---|---|---|---|---|---|---|---|")
    for row in summary.to_dict("records"):
        print(f"| {row['dataset']} | {row['r2']:.3f} | {row['accuracy_r2']:.3f} | {'yes' if row['holds'] else 'no'} | "
              f"{row['mae_naive']:.1f} | {row['mae_aline_s']:.1f} | {row['mae_aline_d']:.1f} | "
              f"{row['mae_er_aline_d']:.1f} | {row['target']} |")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="quickstart run folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for predictions and tables, one per run")
    args = parser.parse_args()
    summaries = []
    for run in args.runs:
        out = args.out / run.name
        out.mkdir(parents=True, exist_ok=True)
        summaries.append(validate(run, out))
    pd.concat(summaries).to_csv(args.out / "summary.csv", index=False)
    print(f"\nwrote {args.out / 'summary.csv'}")


if __name__ == "__main__":
    main()
