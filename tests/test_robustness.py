import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import expit, logit, ndtr, ndtri

from clipshift.robustness import (CLIP_EPSILON, BaselineFit, NotFittedError, compute_effective_robustness,
                                  get_transform, plot_all, plot_effective_robustness)
from clipshift.robustness.plots import choose_ticks

BASELINE = [f"b{i}" for i in range(6)]


# --- transforms and BaselineFit -------------------------------------------------------------------------------

def test_logit_fit_recovers_a_known_line():
    x = np.array([0.2, 0.4, 0.6, 0.8, 0.9])
    y = expit(0.8 * logit(x) - 0.5)
    fit = BaselineFit().fit(x, y)
    assert fit.slope_ == pytest.approx(0.8) and fit.intercept_ == pytest.approx(-0.5)
    assert fit.r2_ == pytest.approx(1) and fit.num_models_ == 5 and fit.residual_std_ == pytest.approx(0, abs=1e-9)
    assert fit.predict([0.5])[0] == pytest.approx(expit(-0.5))


def test_probit_fit_recovers_a_known_line():
    x = np.array([0.1, 0.3, 0.5, 0.7])
    y = ndtr(1.2 * ndtri(x) + 0.3)
    fit = BaselineFit("probit").fit(x, y)
    assert (fit.slope_, fit.intercept_, fit.r2_) == (pytest.approx(1.2), pytest.approx(0.3), pytest.approx(1))
    assert fit.predict([0.5])[0] == pytest.approx(ndtr(0.3))


def test_noisy_fit_statistics_by_hand():
    x = expit(np.array([-1.0, 0.0, 1.0]))
    y = expit(np.array([-1.0, 0.5, 1.0]))  # transformed: (-1,-1), (0,0.5), (1,1)
    fit = BaselineFit().fit(x, y)
    # OLS by hand: slope = sum(dx*dy)/sum(dx^2) = 2/2, intercept = mean(y) = 0.5/3; residuals (-1/6, 1/3, -1/6)
    assert fit.slope_ == pytest.approx(1.0) and fit.intercept_ == pytest.approx(1 / 6)
    ss_res, ss_tot = 1 / 36 + 1 / 9 + 1 / 36, (-1 - 1 / 6) ** 2 + (0.5 - 1 / 6) ** 2 + (1 - 1 / 6) ** 2
    assert fit.r2_ == pytest.approx(1 - ss_res / ss_tot)
    assert fit.residual_std_ == pytest.approx(math.sqrt(ss_res / 1))  # ddof 2 with 3 models


def test_effective_robustness_by_hand():
    fit = BaselineFit().fit([0.2, 0.5, 0.8], [0.2, 0.5, 0.8])  # y = x
    assert fit.effective_robustness([0.5], [0.6])[0] == pytest.approx(0.1)
    fit = BaselineFit().fit([0.5, 0.9], [0.3, 0.5])  # logit: y = a x + b through both points
    a = (logit(0.5) - logit(0.3)) / (logit(0.9) - logit(0.5))
    b = logit(0.3) - a * logit(0.5)
    expected = 0.7 - 1 / (1 + math.exp(-(a * math.log(0.8 / 0.2) + b)))
    assert fit.effective_robustness([0.8], [0.7])[0] == pytest.approx(expected)


def test_clipping_with_epsilon():
    t = get_transform("logit")
    assert CLIP_EPSILON == 1e-4
    assert t.forward([0.0, 1.0]) == pytest.approx([math.log(1e-4 / (1 - 1e-4)), math.log((1 - 1e-4) / 1e-4)])
    assert t.forward([0.0], clip_epsilon=0.01)[0] == pytest.approx(math.log(0.01 / 0.99))
    assert get_transform("probit").forward([1.0])[0] == pytest.approx(ndtri(1 - 1e-4))
    assert t.inverse(t.forward([0.3]))[0] == pytest.approx(0.3)
    fit = BaselineFit(clip_epsilon=0.01).fit([0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    assert fit.slope_ == pytest.approx(1) and fit.predict([0.0])[0] == pytest.approx(0.01)


def test_transform_and_fit_errors():
    t = get_transform("logit")
    with pytest.raises(ValueError, match=r"fractions in \[0, 1\], got 76.2"):
        t.forward([0.5, 76.2])
    with pytest.raises(ValueError, match=r"got nan"):
        t.forward([np.nan])
    with pytest.raises(ValueError, match=r"unknown transform 'log'; known: \['logit', 'probit'\]"):
        get_transform("log")
    with pytest.raises(ValueError, match=r"unknown transform 'log'"):
        BaselineFit("log").fit([0.2, 0.4], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"equal length, got shapes \(3,\) and \(2,\)"):
        BaselineFit().fit([0.2, 0.4, 0.6], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"id_acc: need at least 2 baseline models to fit a line, got 1"):
        BaselineFit().fit([0.5], [0.4])
    with pytest.raises(ValueError, match=r"id_acc: all 2 baseline models have the same id accuracy \(0.5\)"):
        BaselineFit().fit([0.5, 0.5], [0.4, 0.3])
    with pytest.raises(ValueError, match=r"shift_acc: .* got -0.1"):
        BaselineFit().fit([0.5, 0.6], [0.4, -0.1])
    with pytest.raises(ValueError, match=r"clip_epsilon must be in \(0, 0.5\), got 0"):
        BaselineFit(clip_epsilon=0).fit([0.5, 0.6], [0.4, 0.5])
    with pytest.raises(NotFittedError, match="not fitted"):
        BaselineFit().predict([0.5])
    assert issubclass(NotFittedError, ValueError)


# --- compute_effective_robustness ------------------------------------------------------------------------------

def _results(n=2000):
    """Baseline models exactly on logit(y) = logit(x) + b for two shifts (b = -1, -1.5); an on-line model
    and a robust one (+0.15 on every shift), all at id accuracy 0.75, with metadata columns."""
    rows = []
    xs = [0.3, 0.45, 0.6, 0.7, 0.8, 0.9]
    models = [(f"b{i}", x, "baseline") for i, x in enumerate(xs)] + [("online", 0.75, "other"), ("robust", 0.75, "clip")]
    for name, x, group in models:
        meta = dict(group=group, objective="contrastive" if name == "robust" else "supervised",
                    train_distribution="diverse" if name == "robust" else "narrow")
        rows.append(dict(model=name, dataset="id", metric="top1", value=x, num_examples=n, **meta))
        rows.append(dict(model=name, dataset="id", metric="top5", value=min(1, x + 0.1), num_examples=n, **meta))
        for shift, b in (("s1", -1.0), ("s2", -1.5)):
            y = expit(logit(x) + b) + (0.15 if name == "robust" else 0.0)
            rows.append(dict(model=name, dataset=shift, metric="top1", value=y, num_examples=n, **meta))
    return pd.DataFrame(rows)


def _er(results=None, **kwargs):
    kwargs.setdefault("baseline_models", BASELINE)
    return compute_effective_robustness(_results() if results is None else results, "id", ["s1", "s2"], **kwargs)


def test_table_fits_and_intervals():
    er, fits = _er()
    assert list(fits.columns) == ["dataset", "id_dataset", "transform", "slope", "intercept", "r2", "num_models",
                                  "clip_epsilon"]
    assert (fits["id_dataset"] == "id").all() and (fits["clip_epsilon"] == CLIP_EPSILON).all()
    f = fits.set_index("dataset")
    assert list(f.index) == ["s1", "s2", "average"] and (f["num_models"] == 6).all()
    assert f.loc["s1", ["slope", "intercept", "r2"]].tolist() == pytest.approx([1.0, -1.0, 1.0])
    assert f.loc["s2", ["slope", "intercept"]].tolist() == pytest.approx([1.0, -1.5])
    assert len(er) == 8 * 3 and er.columns[:10].tolist() == ["model", "dataset", "id_dataset", "id_accuracy",
                                                               "shift_accuracy", "baseline_accuracy",
                                                               "effective_robustness", "ci_low", "ci_high",
                                                               "is_baseline"]
    row = er.set_index(["model", "dataset"])
    assert row.loc[("online", "s1"), "baseline_accuracy"] == pytest.approx(expit(logit(0.75) - 1))
    assert row.loc[("online", "s1"), "effective_robustness"] == pytest.approx(0, abs=1e-9)
    assert row.loc[("online", "s1"), "ci_low"] < 0 < row.loc[("online", "s1"), "ci_high"]
    for dataset in ("s1", "s2"):
        assert row.loc[("robust", dataset), "effective_robustness"] == pytest.approx(0.15, abs=1e-9)
    # the average of two logit lines is not exactly a logit line, but both models share id accuracy 0.75
    gap = row.loc[("robust", "average"), "effective_robustness"] - row.loc[("online", "average"), "effective_robustness"]
    assert gap == pytest.approx(0.15, abs=1e-9) and abs(row.loc[("online", "average"), "effective_robustness"]) < 1e-3
    for dataset in ("s1", "s2", "average"):
        assert row.loc[("robust", dataset), "ci_low"] > 0.1  # interval excludes 0
    assert row.loc[("b3", "s2"), "is_baseline"] and not row.loc[("robust", "s1"), "is_baseline"]


def test_binomial_interval_width_matches_the_delta_method():
    # Baseline exactly on the line → no fit uncertainty; the interval is sampling noise of the model's
    # own accuracies: Var(ER) = y(1-y)/n + (dpred/dx)^2 x(1-x)/n, dpred/dx = y(1-y)/(x(1-x)) on a slope-1 logit line.
    n, x = 2000, 0.75
    y = expit(logit(x) - 1)
    sd = math.sqrt(y * (1 - y) / n + (y * (1 - y)) ** 2 / (x * (1 - x)) / n)
    er, _ = _er(n_bootstrap=4000)
    row = er.set_index(["model", "dataset"]).loc[("online", "s1")]
    assert row["ci_high"] - row["ci_low"] == pytest.approx(2 * 1.959964 * sd, rel=0.08)


def test_unknown_counts_leave_only_fit_uncertainty():
    results = _results().assign(num_examples=np.nan)
    er, _ = _er(results)
    row = er.set_index(["model", "dataset"]).loc[("online", "s1")]
    assert row["ci_low"] == pytest.approx(0, abs=1e-9) and row["ci_high"] == pytest.approx(0, abs=1e-9)
    noisy = results.copy()
    noisy.loc[(noisy.model == "b2") & (noisy.dataset == "s1"), "value"] += 0.05  # baseline off the line
    er, _ = _er(noisy)
    row = er.set_index(["model", "dataset"]).loc[("online", "s1")]
    assert row["ci_high"] - row["ci_low"] > 0.005


def test_bootstrap_is_deterministic_by_seed():
    er, _ = _er(seed=0)
    again, _ = _er(seed=0)
    other, _ = _er(seed=1)
    assert np.array_equal(er["ci_low"], again["ci_low"]) and np.array_equal(er["ci_high"], again["ci_high"])
    assert not np.array_equal(er["ci_low"], other["ci_low"])


def test_metadata_carried_through_and_avg_is_mean():
    results = _results()
    er, _ = _er(results)
    row = er.set_index(["model", "dataset"])
    assert row.loc[("robust", "s1"), ["group", "objective", "train_distribution"]].tolist() == \
        ["clip", "contrastive", "diverse"]
    assert row.loc[("b0", "average"), "objective"] == "supervised"
    for model in ("robust", "b4"):
        mean = results[(results.model == model) & results.dataset.isin(["s1", "s2"])]["value"].mean()
        assert row.loc[(model, "average"), "shift_accuracy"] == pytest.approx(mean)


def test_model_missing_a_shift_gets_no_avg_row():
    results = _results()
    results = results[~((results.model == "robust") & (results.dataset == "s2"))]
    er, _ = _er(results)
    assert sorted(er.loc[er.model == "robust", "dataset"]) == ["s1"]
    assert sorted(er.loc[er.model == "online", "dataset"]) == ["average", "s1", "s2"]


def test_compute_effective_robustness_errors():
    results = _results()
    run = compute_effective_robustness
    with pytest.raises(ValueError, match=r"id_dataset 'imagenet' not in results"):
        run(results, "imagenet", ["s1"], baseline_models=["b0", "b1"])
    with pytest.raises(ValueError, match=r"shift_datasets \['s9'\] not in results"):
        run(results, "id", ["s1", "s9"], baseline_models=["b0", "b1"])
    with pytest.raises(ValueError, match=r"no baseline models given"):
        run(results, "id", ["s1"], baseline_models=[])
    with pytest.raises(ValueError, match=r"need at least 2 baseline models, got 1"):
        run(results, "id", ["s1"], baseline_models=["b0"])
    with pytest.raises(ValueError, match=r"duplicate top1 rows for model 'b0' on dataset 'id'"):
        run(pd.concat([results, results.iloc[:1]]), "id", ["s1"], baseline_models=["b0", "b1"])
    partial = results[~((results.model == "b1") & (results.dataset == "s2"))]
    with pytest.raises(ValueError, match=r"dataset 's2': need at least 2 baseline models with results on "
                                         r"\['id', 's2'\], got 1"):
        run(partial, "id", ["s1", "s2"], baseline_models=["b0", "b1"])
    with pytest.raises(ValueError, match=r"baseline models \['ghost'\] have no top1 results"):
        run(results, "id", ["s1"], baseline_models=["b0", "ghost"])
    percent = results.assign(value=results["value"] * 100)
    with pytest.raises(ValueError, match=r"top1 value 30.0 of model 'b0' on dataset 'id' is not an accuracy"):
        run(percent, "id", ["s1"], baseline_models=["b0", "b1"])
    with pytest.raises(ValueError, match=r"shift_datasets: 'id' cannot be a shift"):
        run(results, "id", ["s1", "id"], baseline_models=["b0", "b1"])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 95"):
        run(results, "id", ["s1"], baseline_models=["b0", "b1"], confidence=95)


def test_baseline_model_missing_a_shift_is_left_out_of_that_fit_only():
    results = _results()
    partial = results[~((results.model == "b1") & (results.dataset == "s2"))]
    er, fits = _er(partial)
    assert fits.set_index("dataset")["num_models"].to_dict() == {"s1": 6, "s2": 5, "average": 5}
    assert sorted(er.loc[er.model == "b1", "dataset"]) == ["s1"]


def test_a_shift_can_take_its_own_id_dataset():
    # imagenet-testbed: ImageNet-R is plotted against ImageNet accuracy on its class subset
    results = _results()
    sub = results[results.dataset == "id"].assign(dataset="id-sub", value=lambda d: d["value"] * 0.9)
    er, fits = _er(pd.concat([results, sub]), id_datasets={"s2": "id-sub"})
    f = fits.set_index("dataset")
    assert f.loc["s1", "id_dataset"] == "id" and f.loc["s2", "id_dataset"] == "id-sub"
    assert f.loc["average", "id_dataset"] == "id"
    row = er.set_index(["model", "dataset"])
    assert row.loc[("online", "s2"), "id_accuracy"] == pytest.approx(0.75 * 0.9)
    assert row.loc[("online", "s2"), "id_dataset"] == "id-sub"
    x = np.array([0.3, 0.45, 0.6, 0.7, 0.8, 0.9])
    expected = BaselineFit().fit(0.9 * x, expit(logit(x) - 1.5))
    assert f.loc["s2", "slope"] == pytest.approx(expected.slope_)
    with pytest.raises(ValueError, match=r"id_datasets: \['s9'\] are not among the shift datasets"):
        _er(results, id_datasets={"s9": "id"})


def test_probit_transform_end_to_end():
    er, fits = _er(transform="probit")
    assert (fits["transform"] == "probit").all()
    row = er.set_index(["model", "dataset"]).loc[("online", "s1")]
    fit = BaselineFit("probit").fit([0.3, 0.45, 0.6, 0.7, 0.8, 0.9], expit(logit([0.3, 0.45, 0.6, 0.7, 0.8, 0.9]) - 1))
    assert row["baseline_accuracy"] == pytest.approx(fit.predict([0.75])[0])


# --- plots -----------------------------------------------------------------------------------------------------

def test_choose_ticks_fit_the_range():
    assert choose_ticks(0.2, 0.95).tolist() == pytest.approx([0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
    assert choose_ticks(0.005, 0.9999).tolist() == pytest.approx([0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999])
    assert choose_ticks(0.52, 0.58).tolist() == pytest.approx([0.52, 0.53, 0.54, 0.55, 0.56, 0.57, 0.58])
    assert choose_ticks(0.9, 0.97).tolist() == pytest.approx([0.9, 0.92, 0.94, 0.96])


def test_plot_writes_one_png_per_dataset(tmp_path):
    er, fits = _er()
    paths = plot_all(er, fits, tmp_path / "figures")
    assert [p.name for p in paths] == ["er_average.png", "er_s1.png", "er_s2.png"]
    for path in paths:
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (960, 840)
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [p.name for p in paths]  # no temp files left


def test_plot_probit_fit_on_probit_axes(tmp_path):
    er, fits = _er(transform="probit")
    path = plot_effective_robustness(er, fits, "s1", tmp_path / "p.png", transform="probit", title="probit",
                                     label_models=False)
    with Image.open(path) as image:
        assert image.size == (960, 840)
    with pytest.raises(ValueError, match=r"dataset 's7' not in er/fits"):
        plot_effective_robustness(er, fits, "s7", tmp_path / "q.png")
