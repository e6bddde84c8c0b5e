"""``report.md`` for a quickstart run: the outcome in words and numbers, computed, never typed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...formatting import markdown_table, pct, pp
from ...io import atomic_write_text
from ...robustness.explore import explorer_link
from ...robustness.protocols import protocol_section

AVG = "average"
TWINS = (("supervised_diverse", "supervised_narrow"), ("contrastive_diverse", "contrastive_narrow"))


def summary_table(er: pd.DataFrame) -> pd.DataFrame:
    """One row per model on the average over shifts: ID, shift accuracy, ER and its interval."""
    avg = er[er["dataset"] == AVG].copy()
    return avg[["model", "group", "id_accuracy", "shift_accuracy", "baseline_accuracy",
                "effective_robustness", "ci_low", "ci_high"]].sort_values(["group", "model"])


def findings(er: pd.DataFrame) -> list[str]:
    """Sentences stating what came out, each computed from the numbers."""
    avg = er[er["dataset"] == AVG].set_index("model")
    lines = []
    for diverse, narrow in TWINS:
        if diverse in avg.index and narrow in avg.index:
            gap = avg.at[diverse, "effective_robustness"] - avg.at[narrow, "effective_robustness"]
            verdict = "holds" if gap >= 0.05 else ("points the same way but is smaller than 5 pp" if gap > 0 else "does not hold")
            lines.append(f"**{diverse}** has {pp(gap)} more average effective robustness than **{narrow}** "
                         f"({pp(avg.at[diverse, 'effective_robustness'])} vs {pp(avg.at[narrow, 'effective_robustness'])}): "
                         f"'diverse data gives robustness' {verdict} for this loss.")
    for model in ("contrastive_narrow", "contrastive_diverse", "supervised_narrow", "supervised_diverse"):
        if model in avg.index:
            row = avg.loc[model]
            lines.append(f"**{model}** sits {_where(row)}: ER {pp(row['effective_robustness'])} "
                         f"[{pp(row['ci_low'])}, {pp(row['ci_high'])}] at {pct(row['id_accuracy'])} ID accuracy.")
    if "contrastive_narrow" in avg.index and avg.at["contrastive_narrow", "ci_low"] > 0:
        lines.append("**contrastive_narrow** is above the line, where Fang et al. found CLIP trained on "
                     "ImageNet-Captions on it: its captions name colours, styles and backgrounds that the "
                     "`narrow` labels do not, and the README explains why that helps in this world.")
    bare = [m for m in avg.index if m.endswith("_bare")]
    for model in bare:
        base = model[: -len("_bare")]
        if base in avg.index:
            diff = avg.at[model, "effective_robustness"] - avg.at[base, "effective_robustness"]
            lines.append(f"Prompts: **{base}** with the bare class name instead of the template ensemble changes "
                         f"average ER by {pp(diff)} and ID accuracy by "
                         f"{pp(avg.at[model, 'id_accuracy'] - avg.at[base, 'id_accuracy'])}.")
    return lines


def _where(row) -> str:
    """Where a model's 95% interval puts it relative to the baseline."""
    if row["ci_low"] <= 0 <= row["ci_high"]:
        return "on the baseline (its 95% interval contains 0)"
    return "above the baseline" if row["ci_low"] > 0 else "below the baseline"


def baseline_spread(er: pd.DataFrame) -> str:
    """One sentence on how tightly the baseline models themselves follow their line."""
    avg = er[(er["dataset"] == AVG) & er["is_baseline"].astype(bool)]
    if avg.empty:
        return ""
    lo, hi = avg["effective_robustness"].min(), avg["effective_robustness"].max()
    return (f"The {len(avg)} baseline models' own average ER ranges from {pp(lo)} to {pp(hi)} "
            f"(how far a model on the line can sit from it by chance).")


def _strata_note(two: pd.DataFrame) -> str:
    """How the two-ID intervals resample the baseline: within each training distribution."""
    base = two[two["is_baseline"].astype(bool)]
    if "train_distribution" not in base.columns:
        return ""
    sizes = ", ".join(f"{n} `{d}`" for d, n in base["train_distribution"].value_counts().sort_index().items())
    return (f" Intervals: a stratified bootstrap that resamples the baseline within each training "
            f"distribution ({sizes} models in every draw).")


def multi_id_section(er: pd.DataFrame, multi) -> str:
    """Single-ID next to two-ID effective robustness (Shi et al. 2023), with what changes."""
    if multi is None:
        return ""
    er_multi, fits_multi = multi
    one = er[er["dataset"] == AVG].set_index("model")
    two = er_multi[er_multi["dataset"] == AVG].set_index("model")
    models = [m for m in one.index if m in two.index and not bool(one.at[m, "is_baseline"])
              and not bool(two.at[m, "is_baseline"])]
    rows = ["| model | ID `test` | ID `test_diverse` | ER, one ID set | ER, two ID sets | change |", "|---|---|---|---|---|---|"]
    for m in models:
        a, b = one.loc[m], two.loc[m]
        rows.append(f"| {m} | {pct(a['id_accuracy'])} | {pct(b['id_accuracy_test_diverse'])} | "
                    f"{pp(a['effective_robustness'])} [{pp(a['ci_low'])}, {pp(a['ci_high'])}] | "
                    f"{pp(b['effective_robustness'])} [{pp(b['ci_low'])}, {pp(b['ci_high'])}] | "
                    f"{pp(b['effective_robustness'] - a['effective_robustness'])} |")
    fit = fits_multi.set_index("dataset").loc[AVG]
    diverse = [m for m in models if "diverse" in m]
    changes = ", ".join(f"**{m}** {pp(one.at[m, 'effective_robustness'])} → {pp(two.at[m, 'effective_robustness'])}"
                        for m in diverse)
    shrink = [one.at[m, "effective_robustness"] - two.at[m, "effective_robustness"] for m in diverse]
    said = ""
    if diverse:
        direction = "lose" if min(shrink) > 0 else ("gain" if max(shrink) < 0 else "change by")
        size = (f"{100 * min(abs(x) for x in shrink):.1f} to {100 * max(abs(x) for x in shrink):.1f} pp"
                if direction != "change by" else f"{pp(-max(shrink))} to {pp(-min(shrink))}")
        said = (f"Controlling for accuracy on both ID test sets, the models trained on `diverse` data {direction} "
                f"{size} of effective robustness ({changes}): part of what one ID set calls robustness "
                f"is accuracy on their own training distribution, as Shi et al. found for CLIP.")
    return f"""## Effective robustness with two ID test sets (Shi et al. 2023)

Against one ID test set (`test`, `narrow`-like), a model trained on other data is compared with
`narrow`-trained models only. Shi et al. fit the baseline over models trained on each distribution
and control for accuracy on an ID test set of each: here a plane
logit(shift) = w₁·logit(`test`) + w₂·logit(`test_diverse`) + c over {int(fit['num_models'])} supervised
models trained on `narrow` or `diverse` data (average over shifts: w₁ = {fit['weight_test']:.2f},
w₂ = {fit['weight_test_diverse']:.2f}, R² {fit['r2']:.2f}; `er_multi_id.csv`, `fits_multi_id.csv`).{_strata_note(two)}

{chr(10).join(rows)}

{said}

![two-ID fit](figures/er_multi_id_average.png)
"""


def write_report(run_dir: Path, config, results, er, fits, facts, figures, probe_md: str = "", multi=None) -> Path:
    run_dir = Path(run_dir)
    table = summary_table(er[~er["is_baseline"].astype(bool)])
    n_narrow = int(er.loc[er["dataset"] == AVG, "is_baseline"].astype(bool).sum())
    shown = table.assign(**{c: table[c].map(pct) for c in ("id_accuracy", "shift_accuracy", "baseline_accuracy")},
                         effective_robustness=table["effective_robustness"].map(pp),
                         ci=[f"[{pp(lo)}, {pp(hi)}]" for lo, hi in zip(table["ci_low"], table["ci_high"])])
    shown = shown.drop(columns=["ci_low", "ci_high"])
    per_shift = er[(er["dataset"] != AVG) & ~er["is_baseline"].astype(bool)].pivot_table(index="model", columns="dataset", values="effective_robustness")
    per_shift = per_shift.map(pp).reset_index()
    match_lines = [f"- `{name}`: {100 * m['match_rate']:.1f}% of captions matched exactly one class; "
                   f"label precision {100 * m['precision']:.1f}% against the true labels"
                   for name, m in facts["text_match"].items()]
    adv = facts["adversarial"]
    fit_lines = [f"- `{r.dataset}`: slope {r.slope:.3f}, intercept {r.intercept:.3f}, R² {r.r2:.3f}, "
                 f"{int(r.num_models)} baseline models" for r in fits.itertuples()]
    figure_lines = [f"![{Path(p).stem}](figures/{Path(p).name})" for p in figures]
    text = f"""# clipshift quickstart: does data determine robustness?

Models: {config.architecture} (one image tower for every objective), trained on
{config.train_size} images of the embedded world, evaluated on `test` (in-distribution) and the
shifts {', '.join(f'`{s}`' for s in sorted(set(er['dataset']) - {AVG}))}. The baseline is a line
fitted in logit space over {n_narrow} supervised models trained on `narrow` data of
different sizes, epochs, augmentation and image towers. Effective robustness (ER) is the shift accuracy above that line, in
percentage points, with 95% bootstrap intervals.

## What came out

{chr(10).join('- ' + line for line in findings(er))}

## Average over shifts

{markdown_table(shown)}

{baseline_spread(er)}

## Effective robustness per shift

{markdown_table(per_shift)}

{multi_id_section(er, multi)}
## Baseline fits

{chr(10).join(fit_lines)}

{protocol_section(results)}## Data

![examples of the training data and of every evaluation set](figures/world_samples.png)

{chr(10).join(match_lines)}
- `adversarial`: {adv['kept']} images kept of {adv['pool_drawn']} drawn from the hard pool; the
  reference model's accuracy on the pool was {100 * adv['reference_pool_accuracy']:.1f}%.

{probe_md.strip() + chr(10) + chr(10) if probe_md else ""}## Figures

{explorer_link()}

{chr(10).join(figure_lines)}

## Run

Wall-clock {facts['seconds_total']:.0f} s. Versions: {', '.join(f'{k} {v}' for k, v in facts['versions'].items())}.
Seed {config.seed}; the full configuration is in `config.yaml`, every number in `results.csv`,
`er.csv`, `fits.csv` and `probe.csv`.
"""
    path = run_dir / "report.md"
    atomic_write_text(path, text)
    return path
