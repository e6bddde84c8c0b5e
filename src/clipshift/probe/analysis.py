"""All probes for a set of models at once, the long ``probe.csv`` table, figures and a markdown section.

:func:`analyze` takes, per model, its representations h of an in-distribution set and of shift
sets (with targets and the model's head), optionally h of concept-labelled images, and returns a
:class:`ProbeResult`. It is used by :func:`clipshift.probe.run.probe_run` (a quickstart run
directory) and by ``clipshift probe`` for real models.

``probe.csv`` is long form, ``model,analysis,key,value``:

- ``kurtosis``: ``kurtosis_mean``, ``kurtosis_std``, ``kurtosis_sem``, ``kurtosis_median``, the same
  for ``excess_kurtosis_*``, ``n_examples``, ``n_dims``;
- ``outliers``: ``ratio_threshold``, ``count``, ``max_ratio``, and ``dim_<j>`` = ratio of each outlier dimension;
- ``magnitude``: ``rank_<r>`` = mean |activation| / median dimension's, for the dimension of rank r;
- ``pruning``: ``<selection>/k=<k>/<dataset>`` = accuracy (random: mean over repeats), with
  ``<selection>/k=<k>/shift_average`` over the shift sets;
- ``concept_auc``: ``<concept>`` = held-out AUC of its probe (evaluated concepts only);
- ``concepts``: ``evaluated``, ``encoded``, ``unique``, ``mean_auc``, ``auc_threshold``;
- ``cka``: ``<other model>`` = linear CKA (or minibatch CKA) on the in-distribution set;
- ``effective_robustness``: ``average``, ``ci_low``, ``ci_high`` where known;
- ``kurtosis@<layer>``, ``outliers@<layer>``: the same for hooked intermediate layers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from ..formatting import pp
from ..io import atomic_write_text
from ._defaults import AUC_THRESHOLD, DEFAULT_KS, DEFAULT_L2, MIN_EXAMPLES, OUTLIER_RATIO
from .cka import cka_matrix
from .concepts import concept_probes, count_concepts
from .outliers import activation_profile, kurtosis_summary
from .pruning import pruning_experiment, summarize_pruning

FIGURES = {"magnitudes": "probe_magnitudes.png", "kurtosis_vs_er": "probe_kurtosis_vs_er.png", "cka": "probe_cka.png"}


@dataclass
class ProbeConfig:
    """Settings of the probes. ``summary_k``: the pruning k quoted in the summary and markdown
    (every k of ``ks`` is in probe.csv; if summary_k is not among them, the largest k below it). ``cka_batch_size``: None for linear CKA on the whole set,
    else minibatch CKA with batches of that size."""

    outlier_ratio: float = OUTLIER_RATIO
    ks: tuple[int, ...] = DEFAULT_KS
    random_repeats: int = 5
    summary_k: int = 4
    auc_threshold: float = AUC_THRESHOLD
    l2: float = DEFAULT_L2
    min_examples: int = MIN_EXAMPLES
    test_fraction: float = 0.5
    cka_batch_size: int | None = None
    seed: int = 0

    def validate(self) -> "ProbeConfig":
        if not self.outlier_ratio > 0:
            raise ValueError(f"outlier_ratio must be positive, got {self.outlier_ratio}")
        if not 0.5 <= self.auc_threshold <= 1:
            raise ValueError(f"auc_threshold must be in [0.5, 1], got {self.auc_threshold}")
        if self.random_repeats < 1 or self.summary_k < 1 or any(int(k) < 1 for k in self.ks):
            raise ValueError("random_repeats, summary_k and every k must be at least 1")
        return self


@dataclass
class ModelProbe:
    """One model's inputs: ``sets`` {dataset: (h (N, D), targets (N,))}, ``head`` h → logits,
    ``scorers`` {dataset: (logits, targets) → accuracy} where top-1 is not right, ``concept_features``
    h of the concept images (rows aligned with the concept labels), ``group`` for plots, ``layers``
    {name: (N, D_layer)} pooled intermediate activations on the in-distribution set (kurtosis and
    outliers only, as ``kurtosis@<name>`` / ``outliers@<name>`` in probe.csv)."""

    name: str
    sets: dict[str, tuple[torch.Tensor, torch.Tensor]]
    head: Callable[[torch.Tensor], torch.Tensor]
    group: str = ""
    scorers: dict | None = None
    concept_features: torch.Tensor | None = None
    layers: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ProbeResult:
    """What :func:`analyze` found: ``table`` (long, probe.csv), ``summary`` (one row per model),
    ``profiles`` {model: per-dimension ratio to the median, sorted}, ``cka`` (matrix), ``pruning``
    and ``concepts`` (long tables), ``figures`` (paths once written), ``markdown``."""

    table: pd.DataFrame
    summary: pd.DataFrame
    profiles: dict[str, np.ndarray]
    cka: pd.DataFrame | None
    pruning: pd.DataFrame
    concepts: pd.DataFrame | None
    config: ProbeConfig
    id_dataset: str
    shift_datasets: list[str]
    facts: dict = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    markdown: str = ""


def _rows(model: str, analysis: str, values: Mapping) -> list[dict]:
    return [{"model": model, "analysis": analysis, "key": str(k), "value": float(v)} for k, v in values.items()]


def analyze(models: Sequence[ModelProbe], id_dataset: str, shift_datasets: Sequence[str], *,
            concept_labels: pd.DataFrame | None = None, er: pd.DataFrame | None = None,
            config: ProbeConfig | None = None) -> ProbeResult:
    """Kurtosis, outliers and magnitudes on `id_dataset`; pruning on it and `shift_datasets`;
    concept probes (when `concept_labels` and every model's ``concept_features`` are given); CKA
    across models on `id_dataset`. `er`: optional rows ``model, effective_robustness[, ci_low,
    ci_high, group]`` (average over shifts), joined into the summary and probe.csv."""
    config = (config or ProbeConfig()).validate()
    if not models:
        raise ValueError("no models to probe")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate model names: {names}")
    shift_datasets = list(shift_datasets)
    rows, summary, profiles, pruning_tables = [], [], {}, []
    for m in models:
        model_rows, entry, profiles[m.name], prune = _probe_model(m, id_dataset, shift_datasets, config)
        rows += model_rows
        summary.append(entry)
        pruning_tables.append(prune)
    concepts_long = None
    if concept_labels is not None and all(m.concept_features is not None for m in models):
        concept_rows, concepts_long = _probe_concepts(models, concept_labels, summary, config)
        rows += concept_rows
    cka, cka_rows = _cka(models, id_dataset, config)
    rows += cka_rows
    summary, er_rows = _join_effective_robustness(pd.DataFrame(summary), er)
    rows += er_rows
    table = pd.DataFrame(rows, columns=["model", "analysis", "key", "value"])
    return ProbeResult(table, summary, profiles, cka, pd.concat(pruning_tables, ignore_index=True), concepts_long,
                       config, id_dataset, shift_datasets)


def _probe_model(m: ModelProbe, id_dataset: str, shift_datasets: list[str], config: ProbeConfig):
    """One model's probe.csv rows (kurtosis, outliers, hooked layers, magnitudes, pruning), its summary
    entry, its per-dimension ratios to the median (sorted) and its pruning table."""
    if id_dataset not in m.sets:
        raise ValueError(f"{m.name}: no representations of the in-distribution set {id_dataset!r}")
    h_id = m.sets[id_dataset][0].float()
    stats = kurtosis_summary(h_id)
    rows = _rows(m.name, "kurtosis", stats)
    profile = activation_profile(h_id)
    ratios = profile["ratio_to_median"].to_numpy()
    outliers = profile[profile["ratio_to_median"] > config.outlier_ratio]
    rows += _rows(m.name, "outliers", {"ratio_threshold": config.outlier_ratio, "count": len(outliers),
                                       "max_ratio": float(ratios[0]), **_outlier_dims(outliers)})
    for layer, acts in m.layers.items():
        rows += _rows(m.name, f"kurtosis@{layer}", kurtosis_summary(acts))
        lp = activation_profile(acts)
        lo = lp[lp["ratio_to_median"] > config.outlier_ratio]
        rows += _rows(m.name, f"outliers@{layer}", {"count": len(lo), "max_ratio": float(lp["ratio_to_median"].iloc[0]),
                                                    **_outlier_dims(lo)})
    width = len(str(len(ratios) - 1))
    rows += _rows(m.name, "magnitude", {f"rank_{r:0{width}d}": v for r, v in enumerate(ratios)})
    prune, pruned, values = _pruning(m, id_dataset, shift_datasets, profile["dim"].to_numpy(), config)
    rows += _rows(m.name, "pruning", values)
    entry = {"model": m.name, "group": m.group, "n_dims": int(h_id.shape[1]),
             **{key: stats[key] for key in ("kurtosis_mean", "kurtosis_std", "kurtosis_sem",
                                            "excess_kurtosis_mean", "n_examples")},
             "outliers": len(outliers), "max_ratio": float(ratios[0]), **_pruning_summary(pruned, config)}
    return rows, entry, ratios, prune


def _outlier_dims(outliers: pd.DataFrame) -> dict:
    """``dim_<j>``: ratio to the median of each outlier dimension j."""
    return {f"dim_{int(d)}": r for d, r in zip(outliers["dim"], outliers["ratio_to_median"])}


def _pruning(m: ModelProbe, id_dataset: str, shift_datasets: list[str], order: np.ndarray, config: ProbeConfig):
    """Pruning on the sets the model has: the long table, its summary per (selection, k) and the
    probe.csv values (accuracy per set, and over the shift sets)."""
    sets = {name: m.sets[name] for name in [id_dataset, *shift_datasets] if name in m.sets}
    prune = pruning_experiment(sets, m.head, order, ks=config.ks, random_repeats=config.random_repeats,
                               seed=config.seed, scorers=m.scorers)
    prune.insert(0, "model", m.name)
    shifts_here = [s for s in shift_datasets if s in sets]
    mean_acc = prune.groupby(["selection", "k", "dataset"], as_index=False)["accuracy"].mean()
    values = {f"{r.selection}/k={r.k}/{r.dataset}": r.accuracy for r in mean_acc.itertuples()}
    pruned = summarize_pruning(prune, id_dataset, shifts_here)
    if shifts_here:
        values.update({f"{r.selection}/k={r.k}/shift_average": r.shift_accuracy for r in pruned.itertuples()})
    return prune, pruned, values


def _pruning_summary(pruned: pd.DataFrame, config: ProbeConfig) -> dict:
    """Accuracies without pruning and the drops at the k quoted: summary_k if it was run, else the
    largest k run below it, else the smallest."""
    pruned_ks = sorted(set(pruned["k"]) - {0})
    k = max([x for x in pruned_ks if x <= config.summary_k], default=min(pruned_ks, default=0))
    at_k = pruned[pruned["k"] == k].set_index("selection") if k else None
    base = pruned[pruned["selection"] == "none"].iloc[0]
    entry = {"id_accuracy": base["id_accuracy"], "shift_accuracy": base["shift_accuracy"], "prune_k": k}
    for sel in ("largest", "random"):
        for col in ("id_drop", "shift_drop"):
            entry[f"{col}_{sel}"] = float(at_k.at[sel, col]) if at_k is not None and sel in at_k.index else np.nan
    return entry


def _probe_concepts(models: Sequence[ModelProbe], concept_labels: pd.DataFrame, summary: list[dict],
                    config: ProbeConfig) -> tuple[list[dict], pd.DataFrame]:
    """Concept probes of every model: probe.csv rows (``concept_auc``, ``concepts``) and the long
    table; each model's counts are added to its `summary` entry."""
    probes = {m.name: concept_probes(m.concept_features, concept_labels, test_fraction=config.test_fraction,
                                     seed=config.seed, l2=config.l2, threshold=config.auc_threshold,
                                     min_examples=config.min_examples) for m in models}
    counts = count_concepts(probes).set_index("model")
    concepts_long = pd.concat([t.assign(model=name) for name, t in probes.items()], ignore_index=True)
    rows = []
    for entry in summary:
        c = counts.loc[entry["model"]]
        entry.update({"concepts_evaluated": int(c["evaluated"]), "concepts_encoded": int(c["encoded"]),
                      "concepts_unique": int(c["unique"]), "concept_mean_auc": float(c["mean_auc"])})
        table = probes[entry["model"]]
        rows += _rows(entry["model"], "concept_auc",
                      dict(zip(table.loc[table["evaluated"], "concept"], table.loc[table["evaluated"], "auc"])))
        rows += _rows(entry["model"], "concepts", {"evaluated": c["evaluated"], "encoded": c["encoded"],
                                                   "unique": c["unique"], "mean_auc": c["mean_auc"],
                                                   "auc_threshold": config.auc_threshold})
    return rows, concepts_long


def _cka(models: Sequence[ModelProbe], id_dataset: str, config: ProbeConfig) -> tuple[pd.DataFrame | None, list[dict]]:
    """CKA between the models on `id_dataset` (2+ models with the same number of examples) and its rows."""
    if len(models) < 2 or len({m.sets[id_dataset][0].shape[0] for m in models}) != 1:
        return None, []
    cka = cka_matrix({m.name: m.sets[id_dataset][0] for m in models}, batch_size=config.cka_batch_size,
                     seed=config.seed)
    rows = []
    for name in cka.index:
        rows += _rows(name, "cka", {other: cka.at[name, other] for other in cka.columns if other != name})
    return cka, rows


def _join_effective_robustness(summary: pd.DataFrame, er: pd.DataFrame | None) -> tuple[pd.DataFrame, list[dict]]:
    """The summary with ``effective_robustness`` (and its interval, and groups, where `er` has them;
    NaN without `er`), and the ``effective_robustness`` rows of probe.csv."""
    rows = []
    if er is None or not len(er):
        summary["effective_robustness"] = np.nan
        return summary, rows
    keep = [c for c in ("model", "effective_robustness", "ci_low", "ci_high") if c in er.columns]
    summary = summary.merge(er[keep], on="model", how="left")
    if "group" in er.columns:
        groups = {m: g for m, g in zip(er["model"], er["group"]) if isinstance(g, str) and g}
        summary["group"] = [groups.get(m, g) for m, g in zip(summary["model"], summary["group"])]
    for r in summary.dropna(subset=["effective_robustness"]).itertuples():
        rows += _rows(r.model, "effective_robustness",
                      {"average": r.effective_robustness,
                       **({"ci_low": r.ci_low, "ci_high": r.ci_high} if "ci_low" in summary.columns else {})})
    return summary, rows


# --- writing -----------------------------------------------------------------------------------------------------

def write_outputs(result: ProbeResult, out_dir, *, title_suffix: str = "", colours=None) -> list[Path]:
    """``out_dir/probe.csv`` and the figures under ``out_dir/figures/`` (the kurtosis-vs-ER plot
    only when some model has an effective robustness, the CKA plot only with 2+ models); `colours`:
    group → colour shared with the run's other figures (:func:`clipshift.robustness.colours.run_colours`)."""
    from .plots import plot_cka, plot_kurtosis_vs_er, plot_magnitudes

    out_dir = Path(out_dir)
    figures_dir = out_dir / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "probe.csv", result.table.to_csv(index=False))
    groups = dict(zip(result.summary["model"], result.summary["group"].astype(str)))
    figures = [plot_magnitudes(result.profiles, figures_dir / FIGURES["magnitudes"], groups=groups,
                               ratio=result.config.outlier_ratio, colours=colours,
                               title=f"Per-dimension magnitudes of h on `{result.id_dataset}`{title_suffix}")]
    if result.summary["effective_robustness"].notna().any():
        figures.append(plot_kurtosis_vs_er(result.summary, figures_dir / FIGURES["kurtosis_vs_er"], colours=colours))
    if result.cka is not None:
        figures.append(plot_cka(result.cka, figures_dir / FIGURES["cka"],
                                title=f"Linear CKA of h on `{result.id_dataset}`"))
    result.figures = figures
    return figures


def _pp(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else pp(x)


def _drop(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def markdown_section(result: ProbeResult, *, figure_dir: str = "figures", heading: str = "##",
                     intro: str | None = None) -> str:
    """A short markdown section stating what the probes found, every number computed from `result`.
    Figure links point to ``<figure_dir>/<file>`` (relative to where the markdown is read)."""
    s = result.summary
    cfg = result.config
    lines = [f"{heading} Inside the representations (Crabbé et al.)", ""]
    if intro:
        lines += [intro, ""]
    has_concepts = "concepts_encoded" in s.columns
    header = ["model", "group", "kurtosis (mean ± sd)", "outlier dims", "ID acc",
              f"ID drop, top-{int(s['prune_k'].iloc[0])} / random pruned (pp)", "shift drop, top / random (pp)"]
    header += (["concepts encoded (unique)"] if has_concepts else []) + ["average ER"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in s.itertuples():
        cells = [f"`{r.model}`", str(r.group), f"{r.kurtosis_mean:.2f} ± {r.kurtosis_std:.2f}", str(r.outliers),
                 f"{100 * r.id_accuracy:.1f}%", f"{_drop(r.id_drop_largest)} / {_drop(r.id_drop_random)}",
                 f"{_drop(r.shift_drop_largest)} / {_drop(r.shift_drop_random)}"]
        if has_concepts:
            cells.append(f"{r.concepts_encoded} ({r.concepts_unique})")
        cells.append(_pp(r.effective_robustness))
        table.append("| " + " | ".join(cells) + " |")
    lines += table + [""]

    facts = []
    k = s["kurtosis_mean"]
    lo, hi = s.loc[k.idxmin()], s.loc[k.idxmax()]
    gaussian = int((s["excess_kurtosis_mean"].abs() < 1).sum())
    facts.append(f"Kurtosis of h (Gaussian: 3) ranges from {lo.kurtosis_mean:.2f} (`{lo.model}`) to "
                 f"{hi.kurtosis_mean:.2f} (`{hi.model}`); {gaussian} of {len(s)} models are within 1 of Gaussian.")
    with_er = s.dropna(subset=["effective_robustness"])
    if len(with_er) >= 3:
        rho, p = spearmanr(with_er["kurtosis_mean"], with_er["effective_robustness"])
        top = with_er.loc[with_er["effective_robustness"].idxmax()]
        rank = int((with_er["kurtosis_mean"] > top.kurtosis_mean).sum()) + 1
        facts.append(f"Across the {len(with_er)} models with an effective robustness, Spearman ρ(kurtosis, average ER) "
                     f"= {rho:+.2f} (p = {p:.2g}); the most robust, `{top.model}` ({_pp(top.effective_robustness)}), "
                     f"ranks {rank} of {len(with_er)} by kurtosis ({top.kurtosis_mean:.2f}).")
    found = s[s["outliers"] > 0]
    facts.append(f"Outlier dimensions (mean |activation| above {cfg.outlier_ratio:g}× the median dimension's): "
                 + (", ".join(f"`{r.model}` {r.outliers}" for r in found.itertuples()) if len(found)
                    else f"none in any model (largest ratio {s['max_ratio'].max():.1f}×, `"
                         f"{s.loc[s['max_ratio'].idxmax(), 'model']}`)") + ".")
    kq = int(s["prune_k"].iloc[0])
    facts.append(f"Pruning the {kq} largest dimensions of h costs {s['id_drop_largest'].mean() * 100:.1f} pp of ID "
                 f"accuracy on average over models, {kq} random ones {s['id_drop_random'].mean() * 100:.1f} pp "
                 f"(mean of {cfg.random_repeats} seeded draws); under shift {s['shift_drop_largest'].mean() * 100:.1f} "
                 f"vs {s['shift_drop_random'].mean() * 100:.1f} pp.")
    if has_concepts:
        total = int(s["concepts_evaluated"].max())
        facts.append(f"Concepts (linear probe on h, held-out AUC ≥ {cfg.auc_threshold:g} counts as encoded; unique = "
                     f"encoded by this model and by none of the other {len(s) - 1}): of {total} evaluated concepts, "
                     f"models encode {int(s['concepts_encoded'].min())} to {int(s['concepts_encoded'].max())}, "
                     f"{int(s['concepts_unique'].sum())} unique in all; mean AUC "
                     f"{s['concept_mean_auc'].min():.2f} to {s['concept_mean_auc'].max():.2f}.")
    if result.cka is not None and len(result.cka) > 1:
        c = result.cka.to_numpy()
        iu = np.triu_indices(len(c), 1)
        off = c[iu]
        best, worst = int(np.nanargmax(off)), int(np.nanargmin(off))
        names = list(result.cka.index)
        facts.append(f"Linear CKA between models on `{result.id_dataset}`: mean {np.nanmean(off):.2f}; most similar "
                     f"`{names[iu[0][best]]}` and `{names[iu[1][best]]}` ({off[best]:.2f}), least similar "
                     f"`{names[iu[0][worst]]}` and `{names[iu[1][worst]]}` ({off[worst]:.2f}).")
    lines += [f"- {f}" for f in facts] + [""]
    for path in result.figures:
        lines.append(f"![{Path(path).stem}]({figure_dir}/{Path(path).name})")
    if result.facts:
        f = result.facts
        lines += ["", f"h: {f.get('representation', 'the image encoder output')}; "
                      f"{f.get('images', '')} Computed in {f.get('seconds', float('nan')):.1f} s; every number is in "
                      f"`probe.csv`."]
    return "\n".join(lines).rstrip() + "\n"


def relative_figure_dir(markdown_dir, out_dir) -> str:
    """Figure folder of `out_dir` as seen from `markdown_dir` (for the markdown links)."""
    return Path(os.path.relpath(Path(out_dir) / "figures", Path(markdown_dir))).as_posix()
