"""One model, one colour across a run's figures (robustness/colours.py, issue 25).

The colours are read back from the matplotlib artists of each figure (captured before it is saved),
not from pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex

import clipshift.probe.plots as probe_plots
import clipshift.recipes.study.figures as study_figures
import clipshift.robustness.plots as plots
from clipshift.recipes.quickstart.run import ID_DATASETS, SHIFTS, fit_effective_robustness
from clipshift.recipes.study.hypotheses import REGISTRY
from clipshift.robustness.colours import BASELINE_COLOUR, COLOURS, assign_colours, model_colours, run_colours

GROUPS = {"supervised_narrow": "supervised narrow", "supervised_diverse": "supervised diverse",
          "contrastive_narrow": "contrastive narrow", "contrastive_diverse": "contrastive diverse",
          "contrastive_narrow_bare": "contrastive narrow (bare name)",
          "contrastive_diverse_bare": "contrastive diverse (bare name)"}


def _capture(monkeypatch, module) -> list:
    """Record (path, figure) instead of writing each PNG of `module`."""
    seen = []

    def keep(fig, path, dpi=None):
        seen.append((str(path), fig))
        return path

    monkeypatch.setattr(module, "save_png_atomic", keep)
    return seen


def _group_colours(fig) -> dict[str, str]:
    """Group (legend label) → colour of the ER figure's error-bar points; baseline models under "baseline"."""
    ax = fig.axes[0]
    found = {c.get_label(): to_hex(c.lines[0].get_color()) for c in ax.containers}
    for coll in ax.collections:
        if str(coll.get_label()).startswith("baseline models"):
            found["baseline"] = to_hex(coll.get_facecolor()[0])
    return found


def _quickstart_results() -> pd.DataFrame:
    """A quickstart-shaped results table: 4 `narrow` baseline models, 2 `diverse`-trained ones (baseline
    of the two-ID plane only) and the six models of GROUPS; contrastive_diverse_bare lacks `sketch`, so
    it is in some per-shift figures and not in the average one."""
    rng = np.random.default_rng(3)
    models = {f"baseline_{i}": ("baseline", "narrow") for i in range(4)}
    models |= {f"baseline_diverse_{i}": ("baseline diverse", "diverse") for i in range(2)}
    models |= {m: (g, "diverse" if "diverse" in m else "narrow") for m, g in GROUPS.items()}
    rows = []
    for model, (group, dist) in models.items():
        for dataset in (*ID_DATASETS, *SHIFTS):
            if model == "contrastive_diverse_bare" and dataset == "sketch":
                continue
            rows.append(dict(model=model, dataset=dataset, metric="top1", value=float(rng.uniform(0.15, 0.85)),
                             num_examples=500, group=group, train_distribution=dist))
    return pd.DataFrame(rows)


def test_quickstart_figures_colour_each_model_alike(tmp_path, monkeypatch):
    """Every ER figure of a quickstart run (the per-shift ones, the average, the two-ID plane) draws a
    model in one colour: its group's, or the baseline grey where it is a baseline model of that fit."""
    seen = _capture(monkeypatch, plots)
    er, fits, figures, multi = fit_effective_robustness(_quickstart_results(), tmp_path, seed=0)
    assert multi is not None and len(seen) == len(SHIFTS) + 2
    tables = {path: (multi[0] if "multi_id" in path else er) for path, _ in seen}
    per_model: dict[str, set] = {}
    for path, fig in seen:
        colours = _group_colours(fig)
        assert colours["baseline"] == BASELINE_COLOUR
        dataset = "average" if "average" in path else path.rsplit("er_", 1)[1][: -len(".png")]
        rows = tables[path][tables[path]["dataset"] == dataset]
        for model, group, base in zip(rows["model"], rows["group"], rows["is_baseline"]):
            per_model.setdefault(model, set()).add(colours["baseline" if base else group])
    assert set(per_model) == {*GROUPS, *(f"baseline_{i}" for i in range(4)), "baseline_diverse_0",
                              "baseline_diverse_1"}
    mixed = {m: c for m, c in per_model.items() if len(c - {BASELINE_COLOUR}) != 1 and not m.startswith("baseline_")}
    assert not mixed, f"models drawn in several colours: {mixed}"
    # the diverse-trained baseline models: their group's colour where they are not baseline models, grey in the plane
    assert per_model["baseline_diverse_0"] == {run_colours(er)["baseline diverse"], BASELINE_COLOUR}


def test_run_colours_and_model_colours():
    er = pd.DataFrame(dict(model=["b0", "b1", "a", "c", "d"], group=["baseline", "baseline", "zeta", "alpha", None],
                           is_baseline=[True, True, False, False, False]))
    colours = run_colours(er)
    # one table: its groups in sorted order take the palette in order (a lone figure's look), baseline grey
    assert colours == {"alpha": COLOURS[0], "other": COLOURS[1], "zeta": COLOURS[2], "baseline": BASELINE_COLOUR}
    assert run_colours(er.iloc[[0, 2]], given=colours)["zeta"] == COLOURS[2]  # a subset keeps the run's colours
    assert run_colours(er.iloc[[0, 2]])["zeta"] == COLOURS[0]  # ...which a figure alone would not
    assert model_colours(er) == {"b0": BASELINE_COLOUR, "b1": BASELINE_COLOUR, "a": COLOURS[2], "c": COLOURS[0],
                                 "d": COLOURS[1]}
    # a group made of baseline models in one table and not in another gets a palette colour
    other = er.assign(is_baseline=[True, False, False, False, False])
    assert run_colours(er, other)["baseline"] == COLOURS[3]


def test_assign_colours_distinct_within_a_figure_shared_across():
    figures = [["a", "b", "c"], ["c", "d", "e"], ["a", "e", "f"]]
    colours = assign_colours(figures)
    assert assign_colours(figures) == colours  # deterministic
    for keys in figures:
        assert len({colours[k] for k in keys}) == len(keys)
    assert colours["a"] == COLOURS[0] and colours["d"] == COLOURS[0]  # d shares no figure with a
    many = assign_colours([[f"k{i}" for i in range(len(COLOURS) + 2)]])
    assert [many[f"k{i}"] for i in range(len(COLOURS) + 2)] == COLOURS + COLOURS[:2]  # cycles when too many
    assert assign_colours([["x", "y"]], given={"y": COLOURS[0]}) == {"y": COLOURS[0], "x": COLOURS[1]}


def _study_inputs():
    """A hand-made study er/fits: one baseline, and configurations `clip_1000` (in both figures),
    `clip_250`, `sup` (one figure each), three seeds each."""
    rng = np.random.default_rng(0)
    rows, summary = [], {}
    for config, n in (("baseline", 0), ("clip_250", 250), ("clip_1000", 1000), ("sup", 1000)):
        for seed in range(3):
            x = float(rng.uniform(0.3, 0.8))
            y = x - 0.2 + (0.05 if config != "baseline" else 0.0) + float(rng.normal(0, 0.01))
            rows.append(dict(model=f"{config}_s{seed}", dataset="average", config=config, id_accuracy=x,
                             shift_accuracy=y, effective_robustness=0.05, is_baseline=config == "baseline"))
        summary[config] = dict(config=config, label=config, train_size=n, id_accuracy=0.6, shift_accuracy=0.45,
                               effective_robustness=0.05, ci_low=0.02, ci_high=0.08)
    fits = pd.DataFrame([dict(dataset="average", transform="logit", slope=1.0, intercept=-0.8, r2=0.9)])
    rows_of = {"size": [summary["clip_250"], summary["clip_1000"]],
               "language_train": [summary["clip_1000"], summary["sup"]]}
    return pd.DataFrame(rows), fits, rows_of


def _mean_colours(fig) -> dict[str, str]:
    """Label → colour of the configuration means on the left axes of a hypothesis figure."""
    return {str(c.get_label()): to_hex(c.get_facecolor()[0]) for c in fig.axes[0].collections
            if not str(c.get_label()).startswith(("_", "baseline", "95%"))}


def test_study_figures_colour_each_configuration_alike(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, study_figures)
    er, fits, rows_of = _study_inputs()
    colours = study_figures.config_colours(rows_of)
    for name, rows in rows_of.items():
        study_figures.plot_hypothesis(REGISTRY[name], rows, er, fits, tmp_path / f"{name}.png", "test",
                                      colours=colours)
    size, language = (_mean_colours(fig) for _, fig in seen)
    assert size["n = 1000"] == language["clip_1000"] == colours["clip_1000"]
    assert len(set(size.values())) == 2 and len(set(language.values())) == 2


def test_probe_figures_take_the_run_colours(tmp_path, monkeypatch):
    seen = _capture(monkeypatch, probe_plots)
    summary = pd.DataFrame(dict(model=["b", "s", "c"], group=["baseline", "supervised narrow", "contrastive narrow"],
                                kurtosis_mean=[3.0, 4.0, 5.0], kurtosis_sem=[0.1, 0.1, 0.1],
                                effective_robustness=[0.0, 0.01, 0.05]))
    er = pd.DataFrame(dict(model=["b", "s", "c", "c_bare"], is_baseline=[True, False, False, False],
                           group=["baseline", "supervised narrow", "contrastive narrow", "contrastive (bare name)"]))
    colours = run_colours(er)
    probe_plots.plot_kurtosis_vs_er(summary, tmp_path / "k.png", colours=colours)
    probe_plots.plot_kurtosis_vs_er(summary, tmp_path / "k.png")
    shared, alone = ({c.get_label(): to_hex(c.lines[0].get_color()) for c in fig.axes[0].containers}
                     for _, fig in seen)
    assert shared == {g: colours[g] for g in summary["group"]}
    assert alone["contrastive narrow"] == COLOURS[0] != shared["contrastive narrow"]  # the default: as before


def test_plot_all_default_shares_colours(tmp_path, monkeypatch):
    """plot_all without `colours` still gives every dataset's figure the colours of the whole er table."""
    from clipshift.robustness import compute_effective_robustness

    seen = _capture(monkeypatch, plots)
    results = _quickstart_results()
    narrow = [f"baseline_{i}" for i in range(4)]
    er, fits = compute_effective_robustness(results, "test", list(SHIFTS), baseline_models=narrow, n_bootstrap=50)
    plots.plot_all(er, fits, tmp_path)
    expected = run_colours(er)
    for path, fig in seen:
        found = _group_colours(fig)
        assert {g: c for g, c in found.items() if g != "baseline"} == {g: expected[g] for g in found if g != "baseline"}
    labels = [set(_group_colours(fig)) for _, fig in seen]
    assert any("contrastive diverse (bare name)" not in s for s in labels)  # the test covers a missing group
