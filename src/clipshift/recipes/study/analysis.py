"""Per-configuration summaries over seeds and the comparisons verdicts are made of."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ...formatting import pct, pp
from ...robustness.effective import AVERAGE


BUDGET = ("steps", "images_seen")  # per model: optimizer steps and images seen (a fine-tune's include its pre-training)


def summarize(er: pd.DataFrame, confidence: float = 0.95, dataset: str = AVERAGE) -> pd.DataFrame:
    """One row per configuration (and head) on `dataset` (default: the average over shifts): means
    over seeds of the ID accuracy, the shift accuracy, ER and the training budget, with a t-interval
    over seeds (with one seed: the model's own bootstrap interval)."""
    avg = er[(er["dataset"] == dataset) & ~er["is_baseline"].astype(bool)]
    rows = []
    for key, part in avg.groupby("config", sort=False):
        values = part["effective_robustness"].to_numpy(float)
        mean, n = float(values.mean()), len(values)
        if n > 1:
            half = stats.t.ppf(0.5 + confidence / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
            low, high, kind = mean - half, mean + half, f"t over {n} seeds"
        else:
            low, high, kind = float(part["ci_low"].iloc[0]), float(part["ci_high"].iloc[0]), "bootstrap (1 seed)"
        first = part.iloc[0]
        budget = {k: float(part[k].mean()) for k in BUDGET if k in part.columns}
        rows.append(dict(config=key, label=first["group"], objective=first["objective"], head=first["head"],
                         diverse_fraction=float(first["diverse_fraction"]), labels=first["labels"],
                         train_size=int(first["train_size"]), seeds=n, **budget,
                         id_accuracy=float(part["id_accuracy"].mean()),
                         shift_accuracy=float(part["shift_accuracy"].mean()),
                         effective_robustness=mean, er_sd=float(values.std(ddof=1)) if n > 1 else float("nan"),
                         ci_low=low, ci_high=high, interval=kind))
    return pd.DataFrame(rows)


def summarize_shifts(er: pd.DataFrame, shifts: list[str], confidence: float = 0.95) -> pd.DataFrame:
    """:func:`summarize` on each shift, one table with a ``dataset`` column."""
    parts = [summarize(er, confidence, d).assign(dataset=d) for d in shifts]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def epoch_records(folder: Path) -> list[dict]:
    """The per-epoch records of the run in `folder` (``metrics.jsonl``), one per epoch in order: an epoch
    logged again by a resumed run counts once, as last logged; [] without a log."""
    path = Path(folder) / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    by_epoch = {r["epoch"]: r for r in records if "epoch" in r}
    return [by_epoch[k] for k in sorted(by_epoch)]


def run_budget(folder: Path) -> dict:
    """Optimizer steps and images seen of the finished run in `folder`, from its last epoch record
    (NaN where the log has none)."""
    last = next((r for r in reversed(epoch_records(folder)) if "step" in r), {})
    found = {"steps": last.get("step"), "images_seen": last.get("images_seen")}
    return {k: float(v) if v is not None else float("nan") for k, v in found.items()}


def interval(row) -> str:
    return f"[{pp(row['ci_low'])}, {pp(row['ci_high'])}]"


def overlap(a, b) -> bool:
    return bool(a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"])


def compare(a, b) -> tuple[bool, str]:
    """(effect detected, a sentence) for ER of configuration `a` against `b`."""
    diff = a["effective_robustness"] - b["effective_robustness"]
    head = (f"{a['label']} {pp(a['effective_robustness'])} {interval(a)} vs {b['label']} "
            f"{pp(b['effective_robustness'])} {interval(b)}")
    if overlap(a, b):
        return False, f"{head}: intervals overlap, no effect detected (difference {pp(diff)})."
    direction = "higher" if diff > 0 else "lower"
    return True, f"{head}: intervals do not overlap, {direction} ER by {100 * abs(diff):.1f} pp."


def rank_correlation(xs, ys) -> float:
    """Spearman's ρ of two sequences with more than two points, else NaN."""
    return float(stats.spearmanr(xs, ys)[0]) if len(xs) > 2 else float("nan")


def rows_of(summary: pd.DataFrame, keys: list[str]) -> list[dict]:
    """The summary rows of the configurations `keys` present, in that order."""
    index = summary.set_index("config")
    return [index.loc[k].to_dict() | {"config": k} for k in keys if k in index.index]


def near_chance(row, chance: float) -> bool:
    """Whether a configuration's ID accuracy is under twice `chance` (its ER then says little: every
    model near chance sits near the baseline's low end)."""
    return bool(chance) and row["id_accuracy"] < 2 * chance


def cautions(rows: list[dict], num_classes: int) -> list[str]:
    """Sentences flagging configurations near chance (:func:`near_chance`)."""
    chance = 1 / num_classes
    return [f"Caution: {r['label']} is near chance in distribution ({pct(r['id_accuracy'])}; chance "
            f"{pct(chance)}), so its ER is weak evidence either way." for r in rows if near_chance(r, chance)]
