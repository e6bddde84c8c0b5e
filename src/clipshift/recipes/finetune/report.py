"""``report.md`` and the WiSE-FT figures of a ``clipshift finetune`` run: what came out, in sentences
computed from the numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...io import atomic_write_text
from ...formatting import markdown_table, pct, pp
from ...robustness import AVERAGE, plot_effective_robustness
from ...robustness.colours import BASELINE_COLOUR, run_colours
from .config import GROUP, MODEL_NAME, WISE_GROUP, ZERO_SHOT


def plot_wise(er: pd.DataFrame, fits: pd.DataFrame, dataset: str, path, path_models: list[str],
              alphas: list[float], endpoint: str) -> Path:
    """The effective-robustness plot of `dataset` (baseline models, fit, every model) with the WiSE-FT
    path drawn through `path_models` (θ(α) for `alphas`, zero-shot first), its interior points marked
    with their α where the labels do not crowd, and its highest shift accuracy on this dataset ringed."""
    rows = er[er["dataset"] == dataset].set_index("model")
    on_path = rows.loc[path_models]
    best = on_path["shift_accuracy"].idxmax()

    def overlay(ax, t) -> None:
        x, y = np.asarray(t.forward(on_path["id_accuracy"])), np.asarray(t.forward(on_path["shift_accuracy"]))
        ax.plot(x, y, "-", color=colour, lw=1.5, alpha=0.8, zorder=3.5, label="WiSE-FT path, α = 0 → 1")
        i = path_models.index(best)
        gap = 0.035 * np.subtract(*ax.get_xlim()[::-1])  # α labels closer than this to the last one are left out
        last = None
        for j, (alpha, a, b) in enumerate(zip(alphas, x, y)):
            if 0 < alpha < 1 and j != i and (last is None or np.hypot(a - last[0], b - last[1]) > gap):
                ax.annotate(f"α {alpha:g}", (a, b), xytext=(-5, 6), textcoords="offset points", fontsize=6,
                            color=colour, ha="right", zorder=5)
                last = (a, b)
        ax.scatter([x[i]], [y[i]], s=170, facecolors="none", edgecolors="black", lw=1.0, zorder=6,
                   label=f"highest shift accuracy on the path (α = {alphas[i]:g})")

    named = {ZERO_SHOT, endpoint, best, *MODEL_NAME.values()}
    colours = run_colours(er)  # the run's: the path in its points' colour
    colour = colours.get(WISE_GROUP, BASELINE_COLOUR)
    colour = "black" if colour == BASELINE_COLOUR else colour  # no WiSE-FT point off the baseline
    where = "average over shifts" if dataset == AVERAGE else dataset
    title = f"WiSE-FT between the zero-shot and the fine-tuned model ({endpoint})\n{where}"
    return plot_effective_robustness(er, fits, dataset, path, title=title, label_models=named, overlay=overlay,
                                     colours=colours)


def _change(before: float, after: float, what: str, fmt) -> str:
    if abs(after - before) < 5e-4:
        return f"left {what} at {fmt(after)}"
    verb = "raised" if after > before else "lowered"
    return f"{verb} {what} from {fmt(before)} to {fmt(after)} ({pp(after - before)})"


def _er(row) -> str:
    return f"{pp(row['effective_robustness'])} [{pp(row['ci_low'])}, {pp(row['ci_high'])}]"


def findings(er: pd.DataFrame, wise: pd.DataFrame, modes: list[str], kurt: dict[str, float]) -> list[str]:
    """Sentences stating what came out, each computed from the numbers (`kurt`: model → mean
    kurtosis of its image embedding on the ID set)."""
    avg = er[er["dataset"] == AVERAGE].set_index("model")
    zs = avg.loc[ZERO_SHOT]
    lines = [f"The **zero-shot** model: ID accuracy {pct(zs['id_accuracy'])}, average shift accuracy "
             f"{pct(zs['shift_accuracy'])}, average ER {_er(zs)}."]
    for mode in modes:
        name = MODEL_NAME[mode]
        row = avg.loc[name]
        changes = [_change(zs["id_accuracy"], row["id_accuracy"], "ID accuracy", pct),
                   _change(zs["shift_accuracy"], row["shift_accuracy"], "average shift accuracy", pct),
                   _change(zs["effective_robustness"], row["effective_robustness"], "average ER", pp)]
        overlap = row["ci_low"] <= zs["ci_high"] and zs["ci_low"] <= row["ci_high"]
        lines.append(f"**{GROUP[mode]}** (`{name}`) {changes[0]}, {changes[1]} and {changes[2]}: now {_er(row)}, "
                     f"an interval that {'overlaps' if overlap else 'does not overlap'} the zero-shot model's.")
    endpoint = wise["model"].iloc[-1]
    best = wise.loc[wise["best"]].iloc[0]
    ends = wise.iloc[[0, -1]]
    above = best["shift_accuracy"] - ends["shift_accuracy"].max()
    if 0 < best["alpha"] < 1 and above > 0:
        bulge = wise[wise["shift_accuracy"] > ends["shift_accuracy"].max()]
        lines.append(f"**WiSE-FT**: α = {best['alpha']:g} has the best average shift accuracy, "
                     f"{pct(best['shift_accuracy'])}: {pp(best['shift_accuracy'] - ends['shift_accuracy'].iloc[0])} "
                     f"above the zero-shot model and {pp(best['shift_accuracy'] - ends['shift_accuracy'].iloc[1])} "
                     f"above the fine-tuned one, at ID accuracy {pct(best['id_accuracy'])} and average ER "
                     f"{_er(best)}; "
                     f"{len(bulge)} of the {len(wise) - 2} interior α beat both endpoints.")
    else:
        which = "the zero-shot model" if best["alpha"] == 0 else f"the fine-tuned model (`{endpoint}`)"
        lines.append(f"**WiSE-FT**: no α beats both endpoints on average shift accuracy; the best is α = "
                     f"{best['alpha']:g}, {which}, with {pct(best['shift_accuracy'])}.")
    top_er = wise.loc[wise["effective_robustness"].idxmax()]
    er_above = top_er["effective_robustness"] - ends["effective_robustness"].max()
    where = (f", {pp(er_above)} above the better endpoint: at its ID accuracy ({pct(top_er['id_accuracy'])}) it "
             f"is further above the baseline than either endpoint is at theirs" if er_above > 0 else
             ", an endpoint")
    lines.append(f"Along the path the highest average ER is at α = {top_er['alpha']:g}, {_er(top_er)}{where}.")
    moves = []
    for name in [MODEL_NAME[m] for m in modes if m != "linear-probe"]:
        dk = kurt[name] - kurt[ZERO_SHOT]
        der = avg.at[name, "effective_robustness"] - zs["effective_robustness"]
        moves.append(f"{kurt[name]:.2f} after `{name}` ({dk:+.2f}, while average ER moved {pp(der)}: "
                     f"{'the same way' if (dk > 0) == (der > 0) else 'opposite ways'})")
    if moves:
        lines.append(f"Kurtosis of the image embedding on the ID set (Crabbé et al.'s outlier-feature signature; 3 "
                     f"for Gaussian activations): {kurt[ZERO_SHOT]:.2f} zero-shot, " + "; ".join(moves) + "."
                     + (" The linear probe keeps the zero-shot image tower, so its kurtosis is the zero-shot one."
                        if "linear-probe" in modes else ""))
    return lines


def _model_table(er: pd.DataFrame, kurt: dict[str, float]) -> pd.DataFrame:
    avg = er[(er["dataset"] == AVERAGE) & ~er["is_baseline"].astype(bool)]
    return pd.DataFrame({"model": avg["model"], "group": avg["group"], "ID accuracy": avg["id_accuracy"].map(pct),
                         "avg shift accuracy": avg["shift_accuracy"].map(pct),
                         "average ER [95% CI]": [_er(r) for _, r in avg.iterrows()],
                         "kurtosis (ID)": [f"{kurt[m]:.2f}" if m in kurt else "" for m in avg["model"]]})


def _wise_markdown(wise: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"α": wise["alpha"].map(lambda a: f"{a:g}"), "model": wise["model"],
                         "ID accuracy": wise["id_accuracy"].map(pct),
                         "avg shift accuracy": wise["shift_accuracy"].map(pct),
                         "average ER [95% CI]": [_er(r) for _, r in wise.iterrows()],
                         "kurtosis (ID)": wise["kurtosis"].map(lambda k: f"{k:.2f}"),
                         "": wise["best"].map(lambda b: "**best shift accuracy**" if b else "")})


def _per_set(results: pd.DataFrame) -> pd.DataFrame:
    """Top-1 of every model on every evaluation set (in-distribution first)."""
    table = results.pivot_table(index="model", columns="dataset", values="value", sort=False)
    return table[list(dict.fromkeys(results["dataset"]))].map(pct).reset_index()


def _per_shift_er(er: pd.DataFrame) -> pd.DataFrame:
    ours = er[~er["is_baseline"].astype(bool)]
    table = ours.pivot_table(index="model", columns="dataset", values="effective_robustness", sort=False)
    order = [d for d in table.columns if d != AVERAGE] + [AVERAGE]
    return table[order].map(pp).reset_index()


def _setup_lines(config, facts: dict) -> tuple[str, str, str]:
    """The report's lines on fine-tuning, the linear probe and the shifts without ER (each may be empty)."""
    train = config.train
    probe_lines = [f"- linear probe: L2 penalty {m['probe']['weight_decay']:g} (held-out accuracy per penalty: "
                   + ", ".join(f"{float(k):g} → {pct(v)}" for k, v in m["probe"]["held_out_accuracy"].items())
                   + f"), training accuracy {pct(m['probe']['train_accuracy'])}"
                   for m in facts["modes"].values() if "probe" in m][:1]
    trained = [m for m in config.modes if m != "linear-probe"]
    train_line = (f"- fine-tuning ({', '.join(f'`{MODEL_NAME[m]}`' for m in trained)}): {train.epochs} epochs, batch "
                  f"{train.batch_size}, AdamW lr {train.lr:g}, weight decay {train.weight_decay:g}, "
                  + (f"{train.warmup_steps} warm-up steps" if train.warmup_steps is not None
                     else f"warm-up {100 * train.warmup_fraction:g}% of the steps")
                  + f", cosine schedule, gradient clipping {train.grad_clip:g}, "
                  + ("flip and shift augmentation" if train.augment else "no augmentation")) if trained else ""
    skipped = (f"; no ER on {', '.join(f'`{d}`' for d in facts['shifts_without_baseline'])}, where fewer than 2 "
               f"baseline models have results" if facts["shifts_without_baseline"] else "")
    return train_line, "\n".join(probe_lines), skipped


def write_finetune_report(run_dir, config, results: pd.DataFrame, er: pd.DataFrame, fits: pd.DataFrame,
                          wise: pd.DataFrame, facts: dict, figures: list) -> Path:
    """Write ``report.md`` of a fine-tuning run from its tables (`results`: this run's models only)."""
    run_dir = Path(run_dir)
    kurt = facts["kurtosis_id"]
    fit = fits.set_index("dataset").loc[AVERAGE]
    shifts = [d for d in fits["dataset"] if d != AVERAGE]
    sets = ", ".join(f"`{name}` ({n} images)" for name, n in facts["eval_sets"].items())
    train_line, probe_line, skipped = _setup_lines(config, facts)
    per_mode = ", ".join(f"{m} {facts['modes'][m]['seconds']:.0f} s" for m in config.modes)
    figure_lines = [f"![{Path(p).stem}](figures/{Path(p).name})" for p in figures]
    text = f"""# Fine-tuning CLIP and what it costs in robustness

## Question

Adapting a CLIP model to a labelled task raises its accuracy on that task; Radford et al. (2021) and
Crabbé et al. (2024) find that its effective robustness (ER: accuracy under distribution shift above the
line that conventionally trained models follow; Taori et al. 2020) falls. Does that happen to
`{facts['start']}` fine-tuned on this data, and does weight-space ensembling (WiSE-FT,
Wortsman et al. 2022: θ(α) = (1 − α)·θ_zero-shot + α·θ_fine-tuned) get the robustness back?

## Setup

- start: `{facts['start']}` ({facts['architecture']}), a head initialised from its zero-shot classifier
  ({facts['classes']} classes × {facts['templates']} prompt templates, ensembled, times the logit scale),
  so that step 0 is the zero-shot model
- training data: {facts['data']['images']} labelled images ({config.labels} labels) from
  {len(config.sources)} source(s), {facts['image_size']}×{facts['image_size']} pixels
{train_line}
{probe_line}
- modes: {', '.join(f'`{m}`' for m in config.modes)}; WiSE-FT interpolates the zero-shot model and
  `{MODEL_NAME[config.modes[0]]}` (every tensor, the head included) at α = {', '.join(f'{a:g}' for a in wise['alpha'])}
- evaluation: {sets}; `{config.id_name}` is in distribution
- baseline: {int(fit['num_models'])} models from `{config.baseline}`, a line in {fit['transform']} space
  (average over shifts: slope {fit['slope']:.2f}, R² {fit['r2']:.2f}){skipped}

## What came out

{chr(10).join('- ' + line for line in findings(er, wise, config.modes, kurt))}

## Every model (average over {', '.join(f'`{s}`' for s in shifts)})

{markdown_table(_model_table(er, kurt))}

## WiSE-FT

{markdown_table(_wise_markdown(wise))}

## Accuracy per evaluation set

{markdown_table(_per_set(results))}

## Effective robustness per shift

{markdown_table(_per_shift_er(er))}

## Figures

The α path runs from the zero-shot model (α = 0) to the fine-tuned one (α = 1); a point above both
endpoints is the bulge WiSE-FT is known for. Grey: the baseline models and their fitted line with its
95% bootstrap band; error bars: the 95% ER intervals.

{chr(10).join(figure_lines)}

## Run

Wall-clock {facts['seconds_total']:.0f} s ({per_mode}). Versions:
{', '.join(f'{k} {v}' for k, v in facts['versions'].items())}.
Seeds: {', '.join(f'{k} {v}' for k, v in facts['seeds'].items())}.
The configuration is in `config.yaml`; every number in `results.csv`, `er.csv`, `fits.csv` and `wise.csv`;
the models in `checkpoints/` (`clipshift eval --model`, `clipshift probe --run`).
"""
    path = run_dir / "report.md"
    atomic_write_text(path, text)
    return path
