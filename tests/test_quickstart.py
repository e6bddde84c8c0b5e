"""End to end: `clipshift quickstart --preset tiny` through main(argv), in a temporary folder."""

import pandas as pd
import pytest
import yaml

from clipshift.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    assert main(["quickstart", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    return out


def test_run_directory_holds_every_artefact(run_dir):
    for name in ("config.yaml", "results.csv", "er.csv", "fits.csv", "report.md", "metrics.jsonl",
                 "figures/er_average.png", "figures/er_sketch.png", "world/train_diverse.csv",
                 "world/test", "checkpoints/contrastive_diverse/model.safetensors", "probe.csv",
                 "figures/probe_kurtosis_vs_er.png", "er_multi_id.csv", "fits_multi_id.csv",
                 "figures/er_multi_id_average.png", "explore.html"):
        assert (run_dir / name).exists(), name
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["architecture"] == "clipshift-small-bow"
    results = pd.read_csv(run_dir / "results.csv")
    assert {"model", "dataset", "metric", "value", "num_examples", "objective", "train_distribution"} <= set(results.columns)
    assert set(results["dataset"]) == {"test", "test_diverse", "v2", "sketch", "rendition", "objectnet",
                                       "adversarial"}
    assert results["value"].between(0, 1).all()
    assert {"contrastive_narrow_bare", "supervised_diverse"} <= set(results["model"])
    report = (run_dir / "report.md").read_text()
    assert "## What came out" in report and "supervised_diverse" in report
    assert "## Effective robustness with two ID test sets" in report
    assert "## Inside the representations" in report
    page = (run_dir / "report.html").read_text()  # self-contained: every figure embedded
    assert 'src="figures/' not in page and page.count('src="data:image/png;base64,') >= 2
    assert 'href="explore.html"' in page  # the interactive page beside it (tests/test_explore.py opens it)
    probe = pd.read_csv(run_dir / "probe.csv")
    assert {"model", "analysis", "key", "value"} <= set(probe.columns)
    assert set(results["model"]) - {m for m in results["model"] if m.endswith("_bare")} <= set(probe["model"])


def test_the_finding_points_the_right_way_with_a_fixed_seed(run_dir):
    er = pd.read_csv(run_dir / "er.csv")
    avg = er[er["dataset"] == "average"].set_index("model")["effective_robustness"]
    assert avg["supervised_diverse"] > avg["supervised_narrow"] + 0.03
    results = pd.read_csv(run_dir / "results.csv").set_index(["model", "dataset"])["value"]
    assert results[("supervised_diverse", "sketch")] > results[("supervised_narrow", "sketch")]


def test_the_clip_models_learn_and_the_report_places_them(run_dir):
    results = pd.read_csv(run_dir / "results.csv").set_index(["model", "dataset"])["value"]
    chance = 1 / 12
    # a margin that a broken contrastive objective, text tower or zero-shot head cannot reach
    assert results[("contrastive_narrow", "test")] > 3 * chance
    assert results[("contrastive_diverse", "test")] > 2.5 * chance
    report = (run_dir / "report.md").read_text()
    for model in ("contrastive_narrow", "contrastive_diverse"):
        assert f"**{model}** sits " in report


def test_two_id_sets_fit_a_plane_over_both_baselines(run_dir):
    er1, er2 = pd.read_csv(run_dir / "er.csv"), pd.read_csv(run_dir / "er_multi_id.csv")
    fits = pd.read_csv(run_dir / "fits_multi_id.csv")
    assert {"weight_test", "weight_test_diverse"} <= set(fits.columns)
    base1 = set(er1.loc[er1["is_baseline"], "model"])
    base2 = set(er2.loc[er2["is_baseline"], "model"])
    assert base1 < base2 and all(m.startswith("baseline_diverse_") for m in base2 - base1)
    assert set(er2["id_dataset"]) == {"test+test_diverse"}
    # the tiny preset's 4 narrow and 2 diverse baseline models, resampled within each distribution
    assert ("a stratified bootstrap that resamples the baseline within each training distribution "
            "(2 `diverse`, 4 `narrow` models in every draw)") in (run_dir / "report.md").read_text()


def test_bad_configuration_is_reported_not_raised(tmp_path, capsys):
    assert main(["quickstart", "--preset", "tiny", "--out", str(tmp_path), "train_sise=10"]) == 2
    assert "unknown keys ['train_sise']" in capsys.readouterr().err
    assert main(["quickstart", "--preset", "huge", "--out", str(tmp_path)]) == 2


def test_distribution_overrides_are_validated_and_applied():
    from clipshift.recipes.quickstart import load_config

    config = load_config("tiny", overrides={"distributions": {"diverse": {"styles": {"photo": 0.7, "sketch": 0.3}}}})
    assert config.distribution("diverse").styles == {"photo": 0.7, "sketch": 0.3}
    assert config.distribution("narrow").styles == {"photo": 1.0}
    with pytest.raises(ValueError, match="distributions.diverse: unknown keys \\['stiles'\\]"):
        load_config("tiny", overrides={"distributions": {"diverse": {"stiles": {}}}})
    with pytest.raises(ValueError, match="unknown distribution 'web'"):
        load_config("tiny", overrides={"distributions": {"web": {}}})
