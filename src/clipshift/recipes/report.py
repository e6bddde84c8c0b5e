"""``report.md`` for a quickstart run: the outcome in words and numbers, computed, never typed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..models.factory import atomic_write_text

AVG = "average"
TWINS = (("supervised_diverse", "supervised_narrow"), ("contrastive_diverse", "contrastive_narrow"))


def _pp(x: float) -> str:
    return f"{100 * x:+.1f} pp"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


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
            lines.append(f"**{diverse}** has {_pp(gap)} more average effective robustness than **{narrow}** "
                         f"({_pp(avg.at[diverse, 'effective_robustness'])} vs {_pp(avg.at[narrow, 'effective_robustness'])}): "
                         f"'diverse data gives robustness' {verdict} for this loss.")
    for model in ("contrastive_narrow", "supervised_narrow"):
        if model in avg.index:
            row = avg.loc[model]
            on_line = row["ci_low"] <= 0 <= row["ci_high"]
            where = "on the baseline (its 95% interval contains 0)" if on_line else (
                "above the baseline" if row["ci_low"] > 0 else "below the baseline")
            lines.append(f"**{model}** sits {where}: ER {_pp(row['effective_robustness'])} "
                         f"[{_pp(row['ci_low'])}, {_pp(row['ci_high'])}].")
    bare = [m for m in avg.index if m.endswith("_bare")]
    for model in bare:
        base = model[: -len("_bare")]
        if base in avg.index:
            diff = avg.at[model, "effective_robustness"] - avg.at[base, "effective_robustness"]
            lines.append(f"Prompts: **{base}** with the bare class name instead of the template ensemble changes "
                         f"average ER by {_pp(diff)} and ID accuracy by "
                         f"{_pp(avg.at[model, 'id_accuracy'] - avg.at[base, 'id_accuracy'])}.")
    return lines


def _markdown_table(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_report(run_dir: Path, config, results, er, fits, facts, figures, probe_md: str = "") -> Path:
    run_dir = Path(run_dir)
    table = summary_table(er)
    shown = table.assign(**{c: table[c].map(_pct) for c in ("id_accuracy", "shift_accuracy", "baseline_accuracy")},
                         effective_robustness=table["effective_robustness"].map(_pp),
                         ci=[f"[{_pp(lo)}, {_pp(hi)}]" for lo, hi in zip(table["ci_low"], table["ci_high"])])
    shown = shown.drop(columns=["ci_low", "ci_high"])
    per_shift = er[er["dataset"] != AVG].pivot_table(index="model", columns="dataset", values="effective_robustness")
    per_shift = per_shift.map(_pp).reset_index()
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
fitted in logit space over {len(config.baselines)} supervised models trained on `narrow` data of
different sizes and epochs. Effective robustness (ER) is the shift accuracy above that line, in
percentage points, with 95% bootstrap intervals.

## What came out

{chr(10).join('- ' + line for line in findings(er))}

## Average over shifts

{_markdown_table(shown)}

## Effective robustness per shift

{_markdown_table(per_shift)}

## Baseline fits

{chr(10).join(fit_lines)}

## Data

![examples of the training data and of every evaluation set](figures/world_samples.png)

{chr(10).join(match_lines)}
- `adversarial`: {adv['kept']} images kept of {adv['pool_drawn']} drawn from the hard pool; the
  reference model's accuracy on the pool was {100 * adv['reference_pool_accuracy']:.1f}%.

{probe_md.strip() + chr(10) + chr(10) if probe_md else ""}## Figures

{chr(10).join(figure_lines)}

## Run

Wall-clock {facts['seconds_total']:.0f} s. Versions: {', '.join(f'{k} {v}' for k, v in facts['versions'].items())}.
Seed {config.seed}; the full configuration is in `config.yaml`, every number in `results.csv`,
`er.csv`, `fits.csv` and `probe.csv`.
"""
    path = run_dir / "report.md"
    atomic_write_text(path, text)
    return path
