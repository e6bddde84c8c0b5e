import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import expit, logit, ndtr, ndtri

from clipshift.robustness import BaselineFit, compute_effective_robustness, get_transform, plot_all


def test_logit_fit_recovers_a_known_line():
    x = np.array([0.2, 0.4, 0.6, 0.8, 0.9])
    y = expit(0.8 * logit(x) - 0.5)
    fit = BaselineFit().fit(x, y)
    assert fit.slope_ == pytest.approx(0.8) and fit.intercept_ == pytest.approx(-0.5) and fit.r2_ == pytest.approx(1)
    assert fit.predict([0.5])[0] == pytest.approx(expit(-0.5))


def test_probit_fit_recovers_a_known_line():
    x = np.array([0.1, 0.3, 0.5, 0.7])
    y = ndtr(1.2 * ndtri(x) + 0.3)
    fit = BaselineFit("probit").fit(x, y)
    assert (fit.slope_, fit.intercept_) == (pytest.approx(1.2), pytest.approx(0.3))


def test_effective_robustness_by_hand():
    fit = BaselineFit().fit([0.2, 0.5, 0.8], [0.2, 0.5, 0.8])  # y = x
    assert fit.effective_robustness([0.5], [0.6])[0] == pytest.approx(0.1)
    fit = BaselineFit().fit([0.5, 0.9], [0.3, 0.5])  # logit: y = a x + b through both points
    a = (logit(0.5) - logit(0.3)) / (logit(0.9) - logit(0.5))
    expected = 0.7 - expit(a * logit(0.8) + logit(0.3))
    assert fit.effective_robustness([0.8], [0.7])[0] == pytest.approx(expected)


def test_clipping_and_errors():
    t = get_transform("logit")
    assert t.forward([0.0, 1.0]) == pytest.approx([logit(1e-4), logit(1 - 1e-4)])
    with pytest.raises(ValueError, match="fractions in \\[0, 1\\], got 76.2"):
        t.forward([76.2])
    with pytest.raises(ValueError, match="unknown transform 'log'; known: \\['logit', 'probit'\\]"):
        get_transform("log")
    with pytest.raises(ValueError, match="need at least 2 baseline models"):
        BaselineFit().fit([0.5], [0.4])
    with pytest.raises(ValueError, match="same accuracy"):
        BaselineFit().fit([0.5, 0.5], [0.4, 0.3])
    with pytest.raises(RuntimeError, match="not fitted"):
        BaselineFit().predict([0.5])


def _results(n=2000, seed=0):
    """Baseline models exactly on logit(y) = logit(x) - 1 for two shifts; an on-line and a robust model."""
    rows = []
    xs = [0.3, 0.45, 0.6, 0.7, 0.8, 0.9]
    models = [(f"b{i}", x, "baseline") for i, x in enumerate(xs)] + [("online", 0.75, "other"), ("robust", 0.75, "clip")]
    for name, x, group in models:
        rows.append(dict(model=name, dataset="id", metric="top1", value=x, num_examples=n, group=group))
        for shift, b in (("s1", -1.0), ("s2", -1.5)):
            y = expit(logit(x) + b) + (0.15 if name == "robust" else 0.0)
            rows.append(dict(model=name, dataset=shift, metric="top1", value=y, num_examples=n, group=group))
    return pd.DataFrame(rows)


def test_compute_effective_robustness_table_and_intervals():
    results = _results()
    baseline = [f"b{i}" for i in range(6)]
    er, fits = compute_effective_robustness(results, "id", ["s1", "s2"], baseline_models=baseline)
    assert set(fits["dataset"]) == {"s1", "s2", "avg_shifts"}
    assert fits.set_index("dataset").loc["s1", "slope"] == pytest.approx(1.0)
    row = er.set_index(["model", "dataset"])
    assert row.loc[("online", "s1"), "effective_robustness"] == pytest.approx(0, abs=1e-9)
    assert row.loc[("online", "s1"), "ci_low"] < 0 < row.loc[("online", "s1"), "ci_high"]
    assert row.loc[("robust", "s2"), "effective_robustness"] == pytest.approx(0.15, abs=1e-9)
    assert row.loc[("robust", "avg_shifts"), "ci_low"] > 0.1
    mean = results[(results.model == "robust") & results.dataset.isin(["s1", "s2"])]["value"].mean()
    assert row.loc[("robust", "avg_shifts"), "shift_accuracy"] == pytest.approx(mean)
    assert row.loc[("robust", "s1"), "group"] == "clip" and not row.loc[("robust", "s1"), "is_baseline"]
    again, _ = compute_effective_robustness(results, "id", ["s1", "s2"], baseline_models=baseline, seed=0)
    other, _ = compute_effective_robustness(results, "id", ["s1", "s2"], baseline_models=baseline, seed=1)
    assert np.array_equal(er["ci_low"], again["ci_low"]) and not np.array_equal(er["ci_low"], other["ci_low"])


def test_compute_effective_robustness_errors():
    results = _results()
    with pytest.raises(ValueError, match="dataset 'imagenet' not in results"):
        compute_effective_robustness(results, "imagenet", ["s1"], baseline_models=["b0", "b1"])
    with pytest.raises(ValueError, match="need at least 2 baseline models, got 0"):
        compute_effective_robustness(results, "id", ["s1"], baseline_models=[])
    with pytest.raises(ValueError, match="duplicate top1 rows for model 'b0' on dataset 'id'"):
        compute_effective_robustness(pd.concat([results, results.iloc[:1]]), "id", ["s1"], baseline_models=["b0", "b1"])
    partial = results[~((results.model == "b1") & (results.dataset == "s2"))]
    with pytest.raises(ValueError, match="baseline model 'b1' has no top1 result on \\['s2'\\]"):
        compute_effective_robustness(partial, "id", ["s1", "s2"], baseline_models=["b0", "b1"])


def test_plot_writes_one_png_per_dataset(tmp_path):
    er, fits = compute_effective_robustness(_results(), "id", ["s1", "s2"], baseline_models=[f"b{i}" for i in range(6)])
    paths = plot_all(er, fits, tmp_path)
    assert [p.name for p in paths] == ["er_avg_shifts.png", "er_s1.png", "er_s2.png"]
    with Image.open(paths[0]) as image:
        assert image.size == (960, 840)
