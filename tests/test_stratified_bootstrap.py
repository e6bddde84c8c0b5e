"""Stratified bootstrap over baseline models: every draw keeps each training distribution's models.

With 12 baseline models of which 3 are trained on `diverse` (the quickstart's two-ID baseline before
it had five), uniform resampling draws no `diverse` model in about 3% of the draws ((9/12)^12), and
those draws fit the plane's `diverse` direction on nothing: wide, lopsided intervals."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from clipshift.cli import main
from clipshift.robustness import compute_effective_robustness
from clipshift.robustness.baseline import bootstrap_lines, resample_indices
from clipshift.robustness.multi_id import bootstrap_planes

# 12 baseline models as the quickstart had them: 9 trained on narrow, 3 on diverse, interleaved on purpose
STRATA = np.array(["narrow"] * 4 + ["diverse"] + ["narrow"] * 3 + ["diverse"] + ["narrow"] * 2 + ["diverse"],
                  dtype=object)


def test_no_stratified_draw_loses_a_distribution():
    idx = resample_indices(np.random.default_rng(7), len(STRATA), 5000, STRATA)
    assert idx.shape == (5000, 12)
    drawn = STRATA[idx]
    assert (drawn == STRATA).all()  # column j always holds a model of model j's stratum
    assert ((drawn == "diverse").sum(axis=1) == 3).all() and ((drawn == "narrow").sum(axis=1) == 9).all()
    diverse = np.flatnonzero(STRATA == "diverse")
    # still a bootstrap: every diverse model is drawn, and draws repeat models within the stratum
    assert set(np.unique(idx[:, diverse])) == set(diverse)
    assert (np.array([len(set(row)) for row in idx[:, diverse]]) < 3).mean() == pytest.approx(1 - 2 / 9, abs=0.03)


def test_without_strata_the_draws_are_unchanged():
    """No strata, or one stratum holding every model: exactly the uniform draws of before, seed for seed."""
    before = np.random.default_rng(3).integers(0, 12, size=(200, 12))
    assert (resample_indices(np.random.default_rng(3), 12, 200) == before).all()
    assert (resample_indices(np.random.default_rng(3), 12, 200, ["all"] * 12) == before).all()


def _planes_data(rng):
    """Transformed accuracies: the narrow models lie exactly on one plane, the diverse ones off it, so a
    draw of narrow models only is recognisable by its weights."""
    tx = np.column_stack([rng.uniform(0.5, 3.0, 12), rng.uniform(-1.5, 1.0, 12)])
    ty = tx @ [0.7, 0.2] - 1.0
    ty[STRATA == "diverse"] += [0.8, 1.1, 0.6]
    return tx, ty


def test_uniform_resampling_loses_the_diverse_models_stratified_never():
    tx, ty = _planes_data(np.random.default_rng(0))
    uniform_w, _ = bootstrap_planes(np.random.default_rng(1), tx, ty, 1000)
    strata_w, strata_c = bootstrap_planes(np.random.default_rng(1), tx, ty, 1000, strata=STRATA)
    narrow_only = lambda w: np.isclose(w, [0.7, 0.2], atol=1e-9).all(axis=1)  # noqa: E731
    assert narrow_only(uniform_w).sum() >= 10  # about 32 of 1000 expected
    assert not narrow_only(strata_w).any()
    assert np.isfinite(strata_w).all() and np.isfinite(strata_c).all()


def test_stratified_lines_and_a_stratum_of_one():
    tx = np.linspace(-1, 2, 6)
    ty = 0.9 * tx + 0.1 + np.array([0.0, 0.2, -0.1, 0.1, -0.2, 0.3])
    strata = ["a", "a", "a", "a", "a", "b"]  # model 5 alone: in every draw, exactly once
    idx = resample_indices(np.random.default_rng(0), 6, 500, strata)
    assert (idx[:, 5] == 5).all() and (idx[:, :5] < 5).all()
    slopes, intercepts = bootstrap_lines(np.random.default_rng(0), tx, ty, 500, strata=strata)
    assert np.isfinite(slopes).all() and np.isfinite(intercepts).all()
    # degenerate draws (every x equal) are still redrawn: two models of stratum "a", one alone in "b"
    slopes, _ = bootstrap_lines(np.random.default_rng(0), [0.0, 1.0, 2.0], [0.0, 1.0, 2.0], 300,
                                strata=["a", "a", "b"])
    assert np.allclose(slopes, 1.0)
    with pytest.raises(ValueError, match=r"strata: need one label per baseline model \(6\)"):
        resample_indices(np.random.default_rng(0), 6, 10, ["a"] * 5)
    with pytest.raises(ValueError, match=r"strata: every baseline model needs a label"):
        resample_indices(np.random.default_rng(0), 3, 10, ["a", None, "b"])


def quickstart_like_results(seed: int = 0) -> pd.DataFrame:
    """Synthetic long results shaped as the quickstart's: 9 narrow and 3 diverse supervised baseline
    models, and a CLIP model trained on diverse data, on `test`, `test_diverse` and two shifts."""
    rng = np.random.default_rng(seed)
    models = {f"baseline_n{i}": ("narrow", rng.uniform(0.6, 0.98), rng.uniform(0.25, 0.55)) for i in range(9)}
    models |= {f"baseline_diverse_n{i}": ("diverse", rng.uniform(0.65, 0.9), rng.uniform(0.6, 0.85))
               for i in range(3)}
    models["contrastive_diverse"] = ("diverse", 0.85, 0.8)
    rows = []
    for model, (dist, test, test_diverse) in models.items():
        shifts = {d: expit(w * logit(test) + 0.9 * logit(test_diverse) - 0.6 + rng.normal(0, 0.25))
                  for d, w in (("sketch", 0.1), ("v2", 0.5))}
        group = "clip" if model.startswith("contrastive") else "baseline"
        rows += [dict(model=model, dataset=d, metric="top1", value=v, num_examples=1200, group=group,
                      train_distribution=dist)
                 for d, v in {"test": test, "test_diverse": test_diverse, **shifts}.items()]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("world", [0, 1, 2, 3])
def test_strata_narrow_the_interval_of_a_diverse_clip_model(world):
    results = quickstart_like_results(world)
    baseline = sorted(results.loc[results["group"] == "baseline", "model"].unique())
    args = (results, ["test", "test_diverse"], ["sketch", "v2"])
    plain = compute_effective_robustness(*args, baseline_models=baseline, seed=0)[0]
    strata = compute_effective_robustness(*args, baseline_models=baseline, seed=0,
                                          baseline_strata="train_distribution")[0]
    by_map = compute_effective_robustness(*args, baseline_models=baseline, seed=0, baseline_strata=dict(
        results.drop_duplicates("model").set_index("model")["train_distribution"]))[0]
    assert by_map.to_csv(index=False) == strata.to_csv(index=False)  # a column name or a mapping: the same
    row = lambda er: er.set_index(["model", "dataset"]).loc[("contrastive_diverse", "average")]  # noqa: E731
    plain_row, strata_row = row(plain), row(strata)
    # the point estimate is the fit on all models: strata change only the interval
    assert strata_row["effective_robustness"] == plain_row["effective_robustness"]
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    assert width(strata_row) < 0.9 * width(plain_row)  # measured: 0.74, 0.55, 0.80, 0.75 of the uniform width
    assert strata_row["ci_low"] <= strata_row["effective_robustness"] <= strata_row["ci_high"]


def test_strata_errors():
    results = quickstart_like_results()
    baseline = sorted(results.loc[results["group"] == "baseline", "model"].unique())
    args = (results, ["test", "test_diverse"], ["sketch", "v2"])
    with pytest.raises(ValueError, match=r"baseline_strata: 'distribution' is not a metadata column"):
        compute_effective_robustness(*args, baseline_models=baseline, baseline_strata="distribution")
    with pytest.raises(ValueError, match=r"baseline_strata: no group for baseline model\(s\) \['baseline_n8'\]"):
        compute_effective_robustness(*args, baseline_models=baseline,
                                     baseline_strata={m: "x" for m in baseline if m != "baseline_n8"})
    with pytest.raises(TypeError, match=r"baseline_strata: expected a metadata column name or a mapping"):
        compute_effective_robustness(*args, baseline_models=baseline, baseline_strata=["narrow"] * 12)


def test_cli_baseline_strata(tmp_path, capsys):
    results = quickstart_like_results()
    path = tmp_path / "results.csv"
    results.to_csv(path, index=False)
    common = ["er", "--results", str(path), "--id-dataset", "test,test_diverse", "--shifts", "sketch,v2",
              "--bootstrap", "200"]
    assert main([*common, "--baseline-strata", "train_distribution", "--out", str(tmp_path / "strata")]) == 0
    baseline = sorted(results.loc[results["group"] == "baseline", "model"].unique())
    expected = compute_effective_robustness(results, ["test", "test_diverse"], ["sketch", "v2"], n_bootstrap=200,
                                            baseline_models=baseline, baseline_strata="train_distribution")[0]
    written = pd.read_csv(tmp_path / "strata" / "er.csv").set_index(["model", "dataset"])
    for key, row in expected.set_index(["model", "dataset"]).iterrows():
        assert written.loc[key, ["ci_low", "ci_high"]].tolist() == pytest.approx([row["ci_low"], row["ci_high"]])
    capsys.readouterr()
    assert main([*common, "--baseline-strata", "distribution", "--out", str(tmp_path / "bad")]) == 2
    assert "'distribution' is not a metadata column" in capsys.readouterr().err
