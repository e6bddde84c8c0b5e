"""Effective robustness over several ID test sets (Shi et al., NeurIPS 2023): a plane in logit space."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.special import expit, logit

from clipshift.cli import main
from clipshift.robustness import PlaneFit, compute_effective_robustness, effective_robustness, plot_multi_id_fit
from clipshift.robustness.multi_id import bootstrap_planes

W = {"v2": {"a": 0.6, "b": 0.3, "c": -0.2}, "sketch": {"a": 0.2, "b": 0.9, "c": -0.5}}
# baseline models trained on distribution A (high a, low b) and on B (the reverse), as Shi et al. ask
BASE = {"sup_a0": (0.70, 0.30), "sup_a1": (0.80, 0.35), "sup_a2": (0.60, 0.20), "sup_b0": (0.40, 0.75),
        "sup_b1": (0.50, 0.85), "sup_b2": (0.35, 0.60)}


def plane(dataset: str, a: float, b: float) -> float:
    w = W[dataset]
    return float(expit(w["a"] * logit(a) + w["b"] * logit(b) + w["c"]))


def table(extra: dict | None = None) -> pd.DataFrame:
    """Long results: baseline models exactly on the planes; `extra`: {model: (a, b, {shift: above})}."""
    rows = []
    models = {m: (a, b, {}) for m, (a, b) in BASE.items()} | (extra or {})
    for model, (a, b, above) in models.items():
        group = "baseline" if model in BASE else "test"
        rows += [dict(model=model, dataset="a", metric="top1", value=a, group=group),
                 dict(model=model, dataset="b", metric="top1", value=b, group=group)]
        rows += [dict(model=model, dataset=d, metric="top1", value=plane(d, a, b) + above.get(d, 0.0), group=group)
                 for d in W]
    return pd.DataFrame(rows)


def test_plane_fit_recovers_a_known_plane():
    x = np.array(list(BASE.values()))
    y = np.array([plane("v2", a, b) for a, b in x])
    fit = PlaneFit().fit(x, y)
    assert fit.weights_ == pytest.approx([0.6, 0.3], abs=1e-9) and fit.intercept_ == pytest.approx(-0.2, abs=1e-9)
    assert fit.r2_ == pytest.approx(1.0) and fit.num_models_ == 6
    assert fit.predict([[0.5, 0.5]]) == pytest.approx([expit(-0.2)])
    weights, intercepts = bootstrap_planes(np.random.default_rng(0), logit(x), logit(y), 20)
    assert np.allclose(weights, [0.6, 0.3]) and np.allclose(intercepts, -0.2)  # every resample is on the plane
    with pytest.raises(ValueError, match=r"need at least 3 baseline models to fit a plane on 2 id test sets, got 2"):
        PlaneFit().fit(x[:2], y[:2])
    with pytest.raises(ValueError, match=r"collinear"):
        PlaneFit().fit(np.array([[0.5, 0.5], [0.6, 0.6], [0.7, 0.7]]), y[:3])


def test_two_id_sets_er_by_hand():
    extra = {"clip_b": (0.55, 0.80, {"v2": 0.04, "sketch": 0.10})}
    er, fits = compute_effective_robustness(table(extra), ["a", "b"], ["v2", "sketch"],
                                            baseline_models=list(BASE), n_bootstrap=200)
    f = fits.set_index("dataset")
    assert list(fits.columns) == ["dataset", "id_dataset", "transform", "slope", "intercept", "r2", "num_models",
                                  "clip_epsilon", "weight_a", "weight_b"]
    assert f.loc["v2", ["weight_a", "weight_b", "intercept"]].tolist() == pytest.approx([0.6, 0.3, -0.2], abs=1e-9)
    assert f.loc["sketch", ["weight_a", "weight_b", "intercept"]].tolist() == pytest.approx([0.2, 0.9, -0.5], abs=1e-9)
    assert f["id_dataset"].eq("a+b").all() and f["slope"].isna().all() and (f["num_models"] == 6).all()
    row = er[er.model == "clip_b"].set_index("dataset")
    assert row.loc["v2", "effective_robustness"] == pytest.approx(0.04, abs=1e-12)
    assert row.loc["sketch", "effective_robustness"] == pytest.approx(0.10, abs=1e-12)
    # no test-set counts: the interval is fit uncertainty only, nil on an exact plane
    assert row.loc["sketch", "ci_low"] == pytest.approx(0.10, abs=1e-9) == row.loc["sketch", "ci_high"]
    assert row.loc["v2", ["id_accuracy", "id_accuracy_a", "id_accuracy_b"]].tolist() == [0.55, 0.55, 0.80]
    assert row.loc["v2", "baseline_accuracy"] == pytest.approx(plane("v2", 0.55, 0.80))
    # average: a plane through the baseline's mean shift accuracy, by hand with least squares
    x = np.column_stack([logit(np.array(list(BASE.values()))), np.ones(6)])
    y = logit([(plane("v2", a, b) + plane("sketch", a, b)) / 2 for a, b in BASE.values()])
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    assert f.loc["average", ["weight_a", "weight_b", "intercept"]].tolist() == pytest.approx(coef, abs=1e-9)
    mean = (plane("v2", 0.55, 0.80) + 0.04 + plane("sketch", 0.55, 0.80) + 0.10) / 2
    assert row.loc["average", "effective_robustness"] == pytest.approx(
        mean - expit(coef @ [logit(0.55), logit(0.80), 1]), abs=1e-12)
    assert er.columns[:10].tolist() == ["model", "dataset", "id_dataset", "id_accuracy", "shift_accuracy",
                                        "baseline_accuracy", "effective_robustness", "ci_low", "ci_high", "is_baseline"]


def test_one_id_set_controls_too_little():
    """A model trained on B looks robust against A alone; against A and B it sits on the plane (Shi et al.)."""
    extra = {"clip_b": (0.55, 0.80, {})}
    single = compute_effective_robustness(table(extra), "a", ["v2", "sketch"], 
                                          baseline_models=["sup_a0", "sup_a1", "sup_a2"], n_bootstrap=50)[0]
    multi = compute_effective_robustness(table(extra), ["a", "b"], ["v2", "sketch"], baseline_models=list(BASE),
                                         n_bootstrap=50)[0]
    er_single = single.set_index(["model", "dataset"]).loc[("clip_b", "sketch"), "effective_robustness"]
    er_multi = multi.set_index(["model", "dataset"]).loc[("clip_b", "sketch"), "effective_robustness"]
    assert er_single > 0.2 and er_multi == pytest.approx(0.0, abs=1e-12)


def test_one_id_set_in_a_list_is_todays_output():
    frame = table({"clip_b": (0.55, 0.80, {"v2": 0.04})})
    frame["num_examples"] = 1000  # binomial draws too
    a = compute_effective_robustness(frame, "a", ["v2", "sketch"], baseline_models=list(BASE), n_bootstrap=100)
    b = compute_effective_robustness(frame, ["a"], ["v2", "sketch"], baseline_models=list(BASE), n_bootstrap=100)
    for left, right in zip(a, b):
        assert left.to_csv(index=False) == right.to_csv(index=False)
    # numbers of the single-ID code before multi-ID existed (same table, seed 0, 100 resamples)
    row = a[0].set_index(["model", "dataset"]).loc[("clip_b", "v2")]
    assert list(a[0].columns[:10]) == ["model", "dataset", "id_dataset", "id_accuracy", "shift_accuracy",
                                       "baseline_accuracy", "effective_robustness", "ci_low", "ci_high",
                                       "is_baseline"]
    assert list(a[1].columns) == ["dataset", "id_dataset", "transform", "slope", "intercept", "r2", "num_models",
                                  "clip_epsilon"]
    assert row[["effective_robustness", "ci_low", "ci_high"]].tolist() == pytest.approx(PINNED, abs=1e-12)


# computed with this table by the single-ID code as it was before multi-ID existed (identical output)
PINNED = [0.1331927683309832, 0.07070070958968147, 0.2004997421185576]


def test_multi_id_errors():
    with pytest.raises(ValueError, match=r"id_datasets \(an id dataset per shift\) cannot be combined with several"):
        compute_effective_robustness(table(), ["a", "b"], ["v2"], baseline_models=list(BASE), id_datasets={"v2": "a"})
    with pytest.raises(ValueError, match=r"need at least 3 baseline models with results on \['a', 'b', 'v2'\], got 2"):
        compute_effective_robustness(table(), ["a", "b"], ["v2"], baseline_models=["sup_a0", "sup_b0"])
    with pytest.raises(ValueError, match=r"id_dataset 'c' not in results"):
        compute_effective_robustness(table(), ["a", "c"], ["v2"], baseline_models=list(BASE))
    with pytest.raises(ValueError, match=r"'b' cannot be a shift"):
        compute_effective_robustness(table(), ["a", "b"], ["v2", "b"], baseline_models=list(BASE))


def test_cli_two_id_sets_and_figure(tmp_path, capsys):
    path = tmp_path / "results.csv"
    table({"clip_b": (0.55, 0.80, {"v2": 0.04, "sketch": 0.10})}).to_csv(path, index=False)
    out = tmp_path / "er"
    assert main(["er", "--results", str(path), "--id-dataset", "a,b", "--bootstrap", "100", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weights a 0.600, b 0.300  intercept  -0.200  R² 1.000  (6 models)" in printed
    assert "clip_b  (a 55.0%, b 80.0%, shifts" in printed
    er = pd.read_csv(out / "er.csv")
    assert {"id_accuracy_a", "id_accuracy_b"} <= set(er.columns)
    fits = pd.read_csv(out / "fits.csv")
    assert fits.set_index("dataset").loc["sketch", ["weight_a", "weight_b"]].tolist() == pytest.approx([0.2, 0.9])
    for name in ("er_average.png", "er_v2.png", "er_sketch.png"):
        with Image.open(out / name) as image:
            assert image.size == (960, 840)
    er_frame, fits_frame = effective_robustness(path, id_dataset=["a", "b"], return_fits=True, n_bootstrap=20)
    assert plot_multi_id_fit(er_frame, fits_frame, "v2", tmp_path / "fit.png").exists()
    with pytest.raises(ValueError, match=r"no weight_<id dataset> columns"):
        one = effective_robustness(path, id_dataset="a", return_fits=True, n_bootstrap=20)
        plot_multi_id_fit(*one, "v2", tmp_path / "x.png")
