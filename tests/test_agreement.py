"""Agreement on the line (Baek et al. 2022): ALine-S and ALine-D recover known shift accuracies.

Known answers: (1) exact accuracies and agreements on one probit line; (2) models off the line, with
agreements that satisfy ALine-D's pair identity; (3) prediction arrays whose accuracies and pairwise
agreements are exactly given values on a line. For (3): every model is right on the easiest images
(the first k_i of them) and, where wrong, predicts a wrong class of its own, so two models agree
exactly on the images both get right: agreement(i, j) = min(acc_i, acc_j), on any set. A monotone
line maps the minimum to the minimum, so the agreement points are accuracy points and lie on the
accuracy line exactly. In logit space, slope 2 and intercept −ln 2 map rational accuracies to
rational ones (p ↦ p² / (p² + 2(1 − p)²)), so finite image sets hold the line exactly; in probit
space the counts are rounded, to 1/N with N = 4,000,000 images.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr, ndtri

from clipshift.cli import main
from clipshift.robustness.agreement import (AgreementWarning, aline_d, aline_s, estimate_shift_accuracy,
                                            fit_agreement_line, pairwise_agreement)
from clipshift.robustness.agreement_table import (agreement_on_the_line, effective_robustness_of,
                                                  read_prediction_file, write_prediction_file)

SLOPE, BIAS = 1.3, -0.6
ID_ACC = np.array([0.55, 0.62, 0.70, 0.78, 0.85, 0.92])


def _line(p, slope=SLOPE, bias=BIAS):
    return ndtr(slope * ndtri(p) + bias)


def _id_agreements(m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    agree = np.triu(rng.uniform(0.5, 0.95, (m, m)), 1)
    return agree + agree.T + np.eye(m)


def _threshold_predictions(counts, n_images: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Model i right on the first counts[i] images, else a wrong class of its own: agreement = min accuracy."""
    labels = np.arange(n_images) % n_classes
    preds = np.empty((len(counts), n_images), dtype=np.int16)
    for i, k in enumerate(counts):
        preds[i] = (labels + 1 + i) % n_classes
        preds[i, :k] = labels[:k]
    return preds, labels


def test_exact_probit_line_is_recovered_by_aline_s_and_aline_d():
    id_agree = _id_agreements(len(ID_ACC))
    shift_agree = _line(id_agree)
    np.fill_diagonal(shift_agree, 1.0)
    line = fit_agreement_line(id_agree, shift_agree)
    assert (line.slope, line.intercept, line.r2, line.num_pairs) == pytest.approx((SLOPE, BIAS, 1.0, 15), abs=1e-9)
    truth = _line(ID_ACC)
    assert np.abs(aline_s(ID_ACC, line) - truth).max() < 1e-6
    assert np.abs(aline_d(ID_ACC, id_agree, shift_agree, line.slope) - truth).max() < 1e-6


def test_aline_d_recovers_models_off_the_line_and_their_effective_robustness():
    offsets = np.array([0.3, -0.2, 0.0, 0.1, -0.4, 0.25])  # probit units off the accuracy line
    x = SLOPE * ndtri(ID_ACC) + BIAS + offsets
    id_agree = _id_agreements(len(ID_ACC), seed=1)
    i, j = np.triu_indices(len(ID_ACC), 1)
    shift_agree = np.eye(len(ID_ACC))  # each pair satisfies ALine-D's identity exactly
    shift_agree[i, j] = shift_agree[j, i] = ndtr(0.5 * (x[i] + x[j]) + SLOPE * (
        ndtri(id_agree[i, j]) - 0.5 * (ndtri(ID_ACC[i]) + ndtri(ID_ACC[j]))))
    truth = ndtr(x)
    estimate = aline_d(ID_ACC, id_agree, shift_agree, SLOPE)
    assert np.abs(estimate - truth).max() < 1e-6
    assert np.abs(_line(ID_ACC) - truth).max() > 0.05  # a line alone (ALine-S) cannot see the offsets
    baseline = np.array([True, True, True, True, False, False])
    for transform in ("logit", "probit"):
        line_est, er_est = effective_robustness_of(ID_ACC, estimate, baseline, transform)
        line_true, er_true = effective_robustness_of(ID_ACC, truth, baseline, transform)
        assert np.abs(er_est - er_true).max() < 1e-6 and np.abs(line_est - line_true).max() < 1e-6


def test_prediction_arrays_exactly_on_a_logit_line_are_recovered_exactly():
    id_acc = [Fraction(1, 2), Fraction(3, 5), Fraction(2, 3), Fraction(3, 4), Fraction(4, 5)]
    shift_acc = [p * p / (p * p + 2 * (1 - p) ** 2) for p in id_acc]  # logit: slope 2, intercept -ln 2
    assert shift_acc == [Fraction(1, 3), Fraction(9, 17), Fraction(2, 3), Fraction(9, 11), Fraction(8, 9)]
    n_id, n_shift = 60, 3 * 17 * 11 * 3
    id_preds, id_labels = _threshold_predictions([int(p * n_id) for p in id_acc], n_id, 8)
    shift_preds, shift_labels = _threshold_predictions([int(p * n_shift) for p in shift_acc], n_shift, 8)
    truth = np.array([float(p) for p in shift_acc])
    expected = np.minimum.outer(truth, truth)
    np.fill_diagonal(expected, 1.0)
    assert np.abs(pairwise_agreement(shift_preds) - expected).max() < 1e-15
    models = [f"m{k}" for k in range(5)]
    table, fits = agreement_on_the_line({"id": id_preds, "shift": shift_preds}, {"id": id_labels, "shift": None},
                                        models, id_dataset="id", baseline_models=models[:3], transform="logit")
    fit = fits.iloc[0]
    assert (fit["slope"], fit["intercept"], fit["r2"]) == pytest.approx((2.0, -math.log(2), 1.0), abs=1e-12)
    assert bool(fit["holds"]) and math.isnan(fit["mae_aline_d"])  # no labels: no errors
    for column in ("aline_s", "aline_d"):
        assert np.abs(table[column].to_numpy() - truth).max() < 1e-12
    assert np.abs(table["er_aline_d"]).max() < 1e-12  # every model on the baseline's line
    assert table["shift_accuracy"].isna().all() and table["er_true"].isna().all()
    assert list(table.columns[:9]) == ["model", "dataset", "id_dataset", "id_accuracy", "naive", "aline_s", "aline_d",
                                      "shift_accuracy", "error_naive"]


def test_prediction_arrays_on_a_probit_line_are_recovered_to_1e_6():
    n_id, n_shift = 1000, 4_000_000
    id_counts = (ID_ACC * n_id).round().astype(int)
    truth = _line(id_counts / n_id)
    id_preds, id_labels = _threshold_predictions(id_counts, n_id, 8)
    shift_preds, shift_labels = _threshold_predictions((truth * n_shift).round().astype(int), n_shift, 8)
    estimate = estimate_shift_accuracy(id_preds, id_labels, shift_preds, shift_labels, shift="shift")
    assert estimate.holds and estimate.line.r2 == pytest.approx(1.0, abs=1e-9)
    assert abs(estimate.line.slope - SLOPE) < 1e-5 and abs(estimate.line.intercept - BIAS) < 1e-5
    assert np.abs(estimate.aline_s - truth).max() < 1e-6
    assert np.abs(estimate.aline_d - truth).max() < 1e-6
    assert np.abs(estimate.shift_accuracy - truth).max() <= 0.5 / n_shift
    row = estimate.fit_row()
    assert row["mae_aline_d"] < 1e-6 and row["mae_naive"] == pytest.approx(np.abs(ID_ACC - truth).mean(), abs=1e-6)


def _off_the_line(seed: int = 0):
    """Eight models whose shift predictions are unrelated to their ID ones: agreement is off any line."""
    rng = np.random.default_rng(seed)
    id_preds, id_labels = _threshold_predictions([500, 600, 650, 700, 750, 800, 850, 900], 1000, 10)
    shift_labels = rng.integers(0, 10, 1000)
    noise = rng.uniform(0.05, 0.95, 8)
    shift_preds = np.where(rng.uniform(size=(8, 1000)) < noise[:, None], shift_labels, rng.integers(0, 10, (8, 1000)))
    shift_preds[3] = shift_preds[0]  # a pair that always agrees
    return id_preds, id_labels, shift_preds, shift_labels


def test_a_shift_off_the_line_is_flagged_not_presented_as_reliable():
    id_preds, id_labels, shift_preds, shift_labels = _off_the_line()
    with pytest.warns(AgreementWarning, match=r"noisy: agreement-on-the-line does not hold \(agreement fit R² "):
        estimate = estimate_shift_accuracy(id_preds, id_labels, shift_preds, shift_labels, shift="noisy")
    assert estimate.line.r2 < 0.95 and not estimate.holds
    assert not estimate.table()["reliable"].any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate_shift_accuracy(id_preds, id_labels, shift_preds, min_r2=0.0)  # a threshold it meets: no warning


def test_input_errors_are_one_line_and_name_what_is_wrong(tmp_path):
    preds = np.zeros((2, 5), dtype=int)
    with pytest.raises(ValueError, match="at least 3 models"):
        estimate_shift_accuracy(preds, np.zeros(5), preds)
    with pytest.raises(ValueError, match="3 models' predictions but 2 on the ID set"):
        estimate_shift_accuracy(preds, np.zeros(5), np.zeros((3, 5), dtype=int))
    with pytest.raises(ValueError, match="predicted classes must be integers"):
        estimate_shift_accuracy(np.full((3, 5), 0.5), np.zeros(5), np.zeros((3, 5), dtype=int))
    with pytest.raises(ValueError, match="5 images predicted but labels of shape"):
        estimate_shift_accuracy(np.zeros((3, 5), dtype=int), np.zeros(4), np.zeros((3, 5), dtype=int))
    with pytest.raises(ValueError, match="'id': no labels"):
        agreement_on_the_line({"id": preds, "s": preds}, {}, ["a", "b"], id_dataset="id")
    bad = tmp_path / "bad.npz"
    bad.write_text("model,prediction\n")
    with pytest.raises(ValueError, match=r"bad.npz: not a prediction file .*expected an .npz file with 'models'"):
        read_prediction_file(bad)


def test_prediction_file_round_trip_and_the_command(tmp_path, capsys):
    id_preds, id_labels, shift_preds, shift_labels = _off_the_line()
    counts = [550, 620, 700, 780, 850, 920]
    on_id, on_labels = _threshold_predictions(counts, 1000, 8)
    on_shift, on_shift_labels = _threshold_predictions((_line(np.array(counts) / 1000) * 1000).round().astype(int),
                                                       1000, 8)
    models = [f"base{k}" for k in range(4)] + ["new_model", "other"]
    path = write_prediction_file(tmp_path / "preds.npz", models,
                                 {"id": on_id, "target": on_shift, "noisy": shift_preds[:6]},
                                 {"id": on_labels, "target": None, "noisy": shift_labels})
    read_models, predictions, labels = read_prediction_file(path)
    assert read_models == models and sorted(labels) == ["id", "noisy"]
    assert np.array_equal(predictions["target"], on_shift) and np.array_equal(labels["noisy"], shift_labels)
    out = tmp_path / "aline"
    assert main(["aline", "--predictions", str(path), "--id-dataset", "id", "--baseline", "^base",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "target" in printed and "holds" in printed and "noisy" in printed and "DOES NOT HOLD" in printed
    assert "warning: noisy: agreement-on-the-line does not hold" in printed
    table = pd.read_csv(out / "aline.csv")
    target = table[table["dataset"] == "target"].set_index("model")
    assert table["is_baseline"].sum() == 8 and target["shift_accuracy"].isna().all()
    assert np.abs(target["aline_d"] - _line(np.array(counts) / 1000)).max() < 2e-3  # counts rounded to 1/1000
    fits = pd.read_csv(out / "aline_fits.csv").set_index("dataset")
    assert bool(fits.at["target", "holds"]) and not bool(fits.at["noisy", "holds"])
    assert main(["aline", "--predictions", str(path), "--out", str(out)]) == 2  # two labelled sets: name the ID one


TINY_RUN = {"train_size": 480, "eval_size": 60, "adversarial_size": 24,
            "baselines": [{"train_size": 60, "epochs": 1}, {"train_size": 240, "epochs": 2},
                          {"train_size": 480, "epochs": 3}],
            "reference": {"train_size": 60, "epochs": 1}, "supervised": {"epochs": 3}, "contrastive": {"epochs": 1}}


@pytest.mark.slow  # a small quickstart (~20 s) and every checkpoint scored again
def test_a_run_folder_is_scored_as_the_quickstart_scored_it(tmp_path, capsys):
    from clipshift.recipes.quickstart import load_config, run_quickstart
    from clipshift.robustness.agreement import accuracy
    from clipshift.robustness.agreement_run import run_predictions

    run = tmp_path / "run"
    run_quickstart(load_config("tiny", None, TINY_RUN), run, progress=False, quiet=True)
    models, predictions, labels, groups = run_predictions(run)
    results = pd.read_csv(run / "results.csv").set_index(["model", "dataset"])["value"]
    assert "reference" not in models and not any(m.endswith("_bare") for m in models)
    assert sorted(predictions) == ["adversarial", "objectnet", "rendition", "sketch", "test", "v2"]
    for name, preds in predictions.items():
        for model, acc in zip(models, accuracy(preds, labels[name])):
            assert acc == pytest.approx(results[(model, name)], abs=1e-6), (model, name)
    assert sorted(m for m in models if groups[m] == "baseline") == ["baseline_n240_e2", "baseline_n480_e3",
                                                                     "baseline_n60_e1"]
    if (run / "predictions").is_dir():  # the run's own per-image predictions: the same as scoring again
        _, scored, scored_labels, _ = run_predictions(run, use_saved=False)
        for name in predictions:
            assert np.array_equal(scored[name], predictions[name]) and np.array_equal(scored_labels[name], labels[name])
    assert main(["aline", "--run", str(run), "--out", str(tmp_path / "aline")]) == 0
    assert "agreement lines (probit" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "aline" / "aline.csv")
    assert len(table) == 5 * len(models) and table["er_true"].notna().all()
    assert read_prediction_file(tmp_path / "aline" / "predictions.npz")[0] == models
