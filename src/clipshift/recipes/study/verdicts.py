"""The verdict of each hypothesis, computed from per-configuration summary rows.

A verdict function takes the rows its hypothesis compares (display order) and a :class:`Context`
(the other summary rows, per shift too, the baseline models' ID accuracy range and chance) and
returns a :class:`Verdict`: its sentence, supporting sentences, the finding in the published
finding's terms (``effect`` / ``no effect``; for exposure ``survives`` / ``shrinks`` / ``vanishes``
/ ``mixed`` / ``unclear``), what was held equal, and a caveat where ER does not control for accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ...formatting import pct, pp
from ...robustness.effective import AVERAGE
from .analysis import compare, interval, near_chance, overlap, rank_correlation, rows_of
from .keys import clip_key, supervised_key

EQUAL_WITHIN = 0.05  # budgets within 5% of each other count as equal (whole epochs of whole batches)


@dataclass
class Verdict:
    line: str
    details: list[str]
    finding: str
    held_equal: str = ""
    caveat: str = ""


@dataclass
class Context:
    """What a verdict may look up beyond its own rows. ``summary``: one row per configuration on the
    average over shifts; ``per_shift``: the same per (configuration, dataset); ``baseline_id``: the
    lowest and highest ID accuracy of the baseline models (where the line is fitted)."""

    summary: pd.DataFrame
    per_shift: pd.DataFrame = field(default_factory=pd.DataFrame)
    baseline_id: tuple[float, float] = (0.0, 1.0)
    chance: float = 0.0

    def rows(self, keys: list[str], dataset: str = AVERAGE) -> list[dict]:
        if dataset == AVERAGE:
            return rows_of(self.summary, keys) if len(self.summary) else []
        if not len(self.per_shift):
            return []
        part = self.per_shift[self.per_shift["dataset"] == dataset]
        return [r | {"dataset": dataset} for r in rows_of(part, keys)]


def _value(row, key):
    value = row.get(key)
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else float(value)


def held_equal(rows: list[dict]) -> str:
    """'held equal: …; varied: …' over the budgets of `rows` (training images, optimizer steps, images seen)."""
    equal, varied = [], []
    for key, name in (("train_size", "training images"), ("steps", "optimizer steps"), ("images_seen", "images seen")):
        values = [v for v in (_value(r, key) for r in rows) if v is not None]
        if not values:
            continue
        low, high = min(values), max(values)
        if high - low <= EQUAL_WITHIN * high:
            equal.append(f"{name} ({high:,.0f})")
        else:
            varied.append(f"{name} ({low:,.0f}–{high:,.0f})")
    equal.append("image tower, evaluation sets and protocol")
    return "held equal: " + ", ".join(equal) + ("; varied: " + ", ".join(varied) if varied else "")


def accuracy_control(a: dict, b: dict, ctx: Context) -> tuple[bool, str]:
    """Whether ER compares `a` and `b` at controlled accuracy (both clear of chance and within the
    baseline models' ID range, where the line was fitted), and a sentence saying why."""
    low, high = ctx.baseline_id
    for row in (a, b):
        if near_chance(row, ctx.chance):
            return False, (f"{row['label']} is near chance in distribution ({pct(row['id_accuracy'])}; chance "
                           f"{pct(ctx.chance)}), where every model sits at the line's low end and ER is compressed "
                           f"toward zero")
        if not low <= row["id_accuracy"] <= high:
            above = row["id_accuracy"] > high
            past = row["id_accuracy"] - high if above else low - row["id_accuracy"]
            return False, (f"{row['label']} ({pct(row['id_accuracy'])} ID) lies outside the baseline models' ID range "
                           f"[{pct(low)}, {pct(high)}] ({100 * past:.1f} pp {'above' if above else 'below'} it), so its "
                           f"ER rests on the line extrapolated")
    gap = a["id_accuracy"] - b["id_accuracy"]
    return True, (f"both lie within the baseline models' ID range [{pct(low)}, {pct(high)}], where the line "
                  f"accounts for their ID gap of {pp(gap)}")


def _sweep(rows, axis: str):
    """The two ends of a sweep along `axis`, whether ER differs between them, and Spearman's ρ."""
    low, high = rows[0], rows[-1]
    effect, sentence = compare(high, low)
    return low, high, effect, sentence, rank_correlation([r[axis] for r in rows],
                                                          [r["effective_robustness"] for r in rows])


def _not_enough(rows) -> Verdict:
    return Verdict("Not enough configurations to compare.", [], "not enough", held_equal(rows) if rows else "")


def size_verdict(rows, ctx: Context) -> Verdict:
    if len(rows) < 2:
        return _not_enough(rows)
    small, large, effect, sentence, rho = _sweep(rows, "train_size")
    held = held_equal(rows)
    line = (f"From n={small['train_size']} to n={large['train_size']} ({held}) ID accuracy moves "
            f"{pp(large['id_accuracy'] - small['id_accuracy'])} while ER moves "
            f"{pp(large['effective_robustness'] - small['effective_robustness'])}: "
            + ("the intervals do not overlap, so training-set size changes effective robustness."
               if effect else "the intervals overlap: size moves the model along the baseline, "
                              "no effect on effective robustness detected."))
    details = [sentence] + ([f"Rank correlation of ER with size: ρ = {rho:+.2f}."] if np.isfinite(rho) else [])
    fair, why = accuracy_control(small, large, ctx)
    return Verdict(line, details, "effect" if effect else "no effect", held, "" if fair else why + ".")


def distribution_verdict(rows, ctx: Context) -> Verdict:
    if len(rows) < 2:
        return _not_enough(rows)
    low, high, effect, sentence, rho = _sweep(rows, "diverse_fraction")
    line = (f"Diverse fraction {high['diverse_fraction']:g} vs {low['diverse_fraction']:g}: ER "
            f"{pp(high['effective_robustness'])} vs {pp(low['effective_robustness'])}; "
            + ("intervals do not overlap: the training distribution changes effective robustness"
               if effect else "intervals overlap: no effect of the training distribution detected")
            + (f" (rank correlation with the diverse fraction ρ = {rho:+.2f})." if np.isfinite(rho) else "."))
    details = [sentence]
    n = high["train_size"]
    supervised = ctx.rows([supervised_key("diverse", "text_match", n), supervised_key("narrow", "true", n)])
    if len(supervised) == 2:  # the same question asked of H3's supervised models
        sup_effect, sup_sentence = compare(*supervised)
        details.append("Supervised models: " + sup_sentence)
        line += (f" Supervised models: diverse vs narrow data {pp(supervised[0]['effective_robustness'])} vs "
                 f"{pp(supervised[1]['effective_robustness'])}, intervals "
                 f"{'do not overlap' if sup_effect else 'overlap'}.")
    return Verdict(line, details, "effect" if effect else "no effect", held_equal(rows))


def language_train_verdict(rows, ctx: Context) -> Verdict:
    if len(rows) != 4:
        return _not_enough(rows)
    pairs = [(rows[0], rows[1]), (rows[2], rows[3])]
    results = [compare(a, b) for a, b in pairs]
    found = [r for r, _ in results]
    names = ["narrow data with true labels", "diverse data with text-matched labels"]
    if not any(found):
        line = ("Captions vs labels on the same images: intervals overlap on " + " and on ".join(names)
                + ": no effect of language supervision at training time detected.")
    else:
        where = [f"{n} (captions {'higher' if a['effective_robustness'] > b['effective_robustness'] else 'lower'})"
                 for n, f, (a, b) in zip(names, found, pairs) if f]
        line = f"Captions vs labels on the same images: an effect is detected on {' and '.join(where)}."
    return Verdict(line, [s for _, s in results], "effect" if any(found) else "no effect", held_equal(rows[:2])
                   + " (per data set: the same images, captions vs labels)")


def language_test_verdict(rows, ctx: Context) -> Verdict:
    by = {r["config"]: r for r in rows}
    details, effects = [], []
    for base in [r for r in rows if r["head"] == "ensemble"]:
        for other in ("_bare", "_probe"):
            if base["config"] + other in by:
                effect, sentence = compare(by[base["config"] + other], base)
                details.append(sentence)
                effects.append((other, effect, by[base["config"] + other]["effective_robustness"]
                                - base["effective_robustness"]))
    if not effects:
        return _not_enough(rows)
    bare = [e for o, e, _ in effects if o == "_bare"]
    probe = [(e, d) for o, e, d in effects if o == "_probe"]
    direction = "falls" if probe and np.mean([d for _, d in probe]) < 0 else "rises"
    line = ("Bare class name vs the prompt ensemble: " + ("an effect is detected" if any(bare) else "no effect detected")
            + "; linear probe on the frozen features vs zero-shot: "
            + (f"ER {direction} (intervals do not overlap)" if any(e for e, _ in probe) else "no effect detected") + ".")
    return Verdict(line, details, "effect" if any(bare) else "no effect",
                   "held equal: the same trained models (weights, training data and budget); only the head differs")


def loss_verdict(rows, ctx: Context) -> Verdict:
    simclr, clip_row, sup = (rows + [None, None, None])[:3]
    if not (simclr and clip_row):
        return _not_enough(rows)
    effect, sentence = compare(simclr, clip_row)
    details = [sentence] + ([compare(simclr, sup)[1]] if sup else [])
    diff = simclr["effective_robustness"] - clip_row["effective_robustness"]
    line = (f"SimCLR + text-matched labels vs CLIP on the same diverse data ({pct(simclr['id_accuracy'])} vs "
            f"{pct(clip_row['id_accuracy'])} ID): "
            + (f"ER differs by {pp(diff)} (intervals do not overlap): the loss matters here." if effect
               else "intervals overlap, no effect of the contrastive image–text loss detected."))
    fair, why = accuracy_control(simclr, clip_row, ctx)
    caveat = ""
    if fair:
        line += f" The comparison is accuracy-controlled: {why}."
    else:
        caveat = f"Not accuracy-controlled: {why}."
        alternative = sup and accuracy_control(simclr, sup, ctx)[0]
        line += (f" {caveat}" + (f" The fair comparison is with {sup['label']} ({pct(sup['id_accuracy'])} ID): "
                                 + compare(simclr, sup)[1] if alternative else ""))
    return Verdict(line, details, "effect" if effect else "no effect", held_equal([simclr, clip_row]), caveat)


def exposure_outcome(with_row: dict, without_row: dict) -> str:
    """What removing a shift's domain does to ER on that shift: ``none`` (no ER to lose: the interval with
    the domain reaches the line), ``survives`` (intervals overlap, or ER rises, and ER without the domain
    stays above the line), ``shrinks`` (lower, intervals apart, still above the line), ``vanishes``
    (lower, intervals apart, the interval without reaching the line) or ``unclear`` (intervals overlap
    but without the domain no ER is detected)."""
    if with_row["ci_low"] <= 0:
        return "none"
    above = without_row["ci_low"] > 0
    if overlap(with_row, without_row) or without_row["effective_robustness"] >= with_row["effective_robustness"]:
        return "survives" if above else "unclear"
    return "shrinks" if above else "vanishes"


def _overall(outcomes: dict[str, str]) -> tuple[str, str]:
    """The finding over shifts (from the shifts whose outcome is clear) and its sentence."""
    clear = {s: o for s, o in outcomes.items() if o not in ("unclear", "none")}
    values = set(clear.values())
    names = lambda kinds: ", ".join(f"`{s}`" for s, o in clear.items() if o in kinds)  # noqa: E731
    if not values:
        finding, text = "unclear", "no shift shows a clear effect either way"
    elif len(values) == 1:
        finding = values.pop()
        text = {"survives": "robustness survives without the shift's own domain",
                "shrinks": "robustness shrinks without the shift's own domain but stays above the line",
                "vanishes": "robustness vanishes without the shift's own domain"}[finding] + f" on {names({finding})}"
    elif values <= {"shrinks", "vanishes"}:
        finding, text = "shrinks", f"robustness shrinks or vanishes without the shift's own domain on {names(values)}"
    else:
        finding = "mixed"
        text = (f"robustness survives on {names({'survives'})} and shrinks or vanishes on "
                f"{names({'shrinks', 'vanishes'})}")
    rest = [f"{o} on `{s}`" for s, o in outcomes.items() if o in ("unclear", "none")]
    return finding, text + (f" ({'; '.join(rest)})" if rest else "")


def exposure_verdict(rows, ctx: Context) -> Verdict:
    """`rows`: per shift, CLIP diverse with and then without that shift's domain (``dataset`` the shift)."""
    pairs = [(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
    if not pairs:
        return _not_enough(rows)
    parts, details, outcomes = [], [], {}
    for with_row, without_row in pairs:
        shift = with_row["dataset"]
        outcome = outcomes[shift] = exposure_outcome(with_row, without_row)
        kept = (f", {100 * without_row['effective_robustness'] / with_row['effective_robustness']:.0f}% of it kept"
                if with_row["effective_robustness"] > 0 else "")
        parts.append(f"on `{shift}` ER {pp(with_row['effective_robustness'])} {interval(with_row)} with its domain, "
                     f"{pp(without_row['effective_robustness'])} {interval(without_row)} without ({outcome}{kept})")
        details.append(f"`{shift}`: " + compare(without_row, with_row)[1])
    finding, summary = _overall(outcomes)
    line = "CLIP on diverse data, " + "; ".join(parts) + f". Overall: {summary}."
    caveat = "; ".join(f"on `{s}` the intervals overlap but without the domain no ER is detected (more seeds would "
                       f"tell)" if o == "unclear" else f"on `{s}` CLIP diverse has no ER to lose"
                       for s, o in outcomes.items() if o in ("unclear", "none"))
    return Verdict(line, details, finding, held_equal([r for pair in pairs for r in pair]),
                   caveat[0].upper() + caveat[1:] + "." if caveat else "")


def exposure_rows(domains, train_size: int, ctx: Context) -> list[dict]:
    """Per shift with a domain: CLIP diverse's row on that shift, then the row of CLIP diverse without its domain."""
    out = []
    for shift in domains:
        found = ctx.rows([clip_key(1.0, train_size), clip_key(1.0, train_size, without=shift)], dataset=shift)
        if len(found) == 2:
            out += found
    return out
