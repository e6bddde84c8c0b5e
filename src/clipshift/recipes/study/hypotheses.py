"""The five hypotheses of Fang et al. (2022), as a registry of small objects.

A :class:`Hypothesis` says which configurations it needs (``plan``: calls on the plan builder of
:mod:`.plan`), which of them it compares, in display order (``keys``), how its verdict is computed
from their summary rows (``verdict``), and how its figure lays them out (``axis``). A sixth
hypothesis is one more entry in :data:`REGISTRY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...formatting import pp
from .analysis import compare, rank_correlation


def fraction_tag(fraction: float) -> str:
    return f"{round(100 * fraction):03d}"


def clip_key(fraction: float, size: int) -> str:
    return f"clip_f{fraction_tag(fraction)}_n{size}"


def supervised_key(distribution: str, labels: str, size: int) -> str:
    return f"sup_{distribution}_{'true' if labels == 'true' else 'tm'}_n{size}"


@dataclass(frozen=True)
class Hypothesis:
    name: str
    title: str
    question: str
    plan: Callable  # (builder, config) → None: asks the builder for the configurations it needs
    keys: Callable  # config → configuration keys compared, in display order
    verdict: Callable  # (rows, lookup) → (verdict line, supporting sentences); lookup(keys) → summary rows
    axis: str = "categorical"  # figure's x axis: train_size (log), diverse_fraction, or categorical


# --- H1: size ---------------------------------------------------------------------------------------------------

def _size_plan(b, config):
    for size in sorted(set(config.sizes)):
        b.clip(1.0, size)


def _sweep(rows, axis: str):
    """A sweep along `axis` (rows in its order): its two ends, whether ER differs between them (the
    sentence saying so) and the rank correlation of ER with the axis."""
    low, high = rows[0], rows[-1]
    effect, sentence = compare(high, low)
    return low, high, effect, sentence, rank_correlation([r[axis] for r in rows],
                                                          [r["effective_robustness"] for r in rows])


def _size_verdict(rows, lookup):
    small, large, effect, sentence, rho = _sweep(rows, "train_size")
    line = (f"From n={small['train_size']} to n={large['train_size']} ID accuracy moves "
            f"{pp(large['id_accuracy'] - small['id_accuracy'])} while ER moves "
            f"{pp(large['effective_robustness'] - small['effective_robustness'])}: "
            + ("the intervals do not overlap, so training-set size changes effective robustness."
               if effect else "the intervals overlap: size moves the model along the baseline, "
                              "no effect on effective robustness detected."))
    return line, [sentence] + ([f"Rank correlation of ER with size: ρ = {rho:+.2f}."] if np.isfinite(rho) else [])


# --- H2: distribution -------------------------------------------------------------------------------------------

def _distribution_plan(b, config):
    for fraction in sorted(set(config.mixture)):
        b.clip(float(fraction), config.train_size)


def _distribution_verdict(rows, lookup):
    low, high, effect, sentence, rho = _sweep(rows, "diverse_fraction")
    line = (f"Diverse fraction {high['diverse_fraction']:g} vs {low['diverse_fraction']:g}: ER "
            f"{pp(high['effective_robustness'])} vs {pp(low['effective_robustness'])}; "
            + ("intervals do not overlap: the training distribution changes effective robustness"
               if effect else "intervals overlap: no effect of the training distribution detected")
            + (f" (rank correlation with the diverse fraction ρ = {rho:+.2f})." if np.isfinite(rho) else "."))
    details = [sentence]
    n = high["train_size"]
    supervised = lookup([supervised_key("diverse", "text_match", n), supervised_key("narrow", "true", n)])
    if len(supervised) == 2:  # the same question asked of H3's supervised models
        effect, sentence = compare(*supervised)
        details.append("Supervised models: " + sentence)
        line += (f" Supervised models: diverse vs narrow data {pp(supervised[0]['effective_robustness'])} vs "
                 f"{pp(supervised[1]['effective_robustness'])}, intervals {'do not overlap' if effect else 'overlap'}.")
    return line, details


# --- H3: language at training time ------------------------------------------------------------------------------

def _language_train_plan(b, config):
    n = config.train_size
    b.clip(0.0, n), b.clip(1.0, n), b.supervised("narrow", "true"), b.supervised("diverse", "text_match")


def _language_train_keys(config):
    n = config.train_size
    return [clip_key(0.0, n), supervised_key("narrow", "true", n), clip_key(1.0, n),
            supervised_key("diverse", "text_match", n)]


def _language_train_verdict(rows, lookup):
    pairs = [(rows[0], rows[1]), (rows[2], rows[3])] if len(rows) == 4 else []
    results = [compare(a, b) for a, b in pairs]
    found = [r for r, _ in results]
    names = ["narrow data with true labels", "diverse data with text-matched labels"]
    if not any(found):
        line = ("Captions vs labels on the same images: intervals overlap on " + " and on ".join(names[: len(found)])
                + ": no effect of language supervision at training time detected.")
    else:
        where = [f"{n} (captions {'higher' if a['effective_robustness'] > b['effective_robustness'] else 'lower'})"
                 for n, f, (a, b) in zip(names, found, pairs) if f]
        line = f"Captions vs labels on the same images: an effect is detected on {' and '.join(where)}."
    return line, [s for _, s in results]


# --- H4: language at test time ----------------------------------------------------------------------------------

def _language_test_plan(b, config):
    for fraction in (0.0, 1.0):
        b.clip(fraction, config.train_size, heads=("ensemble", "bare", "probe"))


def _language_test_keys(config):
    n = config.train_size
    return [f"{clip_key(f, n)}{suffix}" for f in (1.0, 0.0) for suffix in ("", "_bare", "_probe")]


def _language_test_verdict(rows, lookup):
    by = {r["config"]: r for r in rows}
    details, effects = [], []
    for base in [r for r in rows if r["head"] == "ensemble"]:
        for other in ("_bare", "_probe"):
            if base["config"] + other in by:
                effect, sentence = compare(by[base["config"] + other], base)
                details.append(sentence)
                effects.append((other, effect, by[base["config"] + other]["effective_robustness"]
                                - base["effective_robustness"]))
    bare = [e for o, e, _ in effects if o == "_bare"]
    probe = [(e, d) for o, e, d in effects if o == "_probe"]
    direction = "falls" if probe and np.mean([d for _, d in probe]) < 0 else "rises"
    line = ("Bare class name vs the prompt ensemble: " + ("an effect is detected" if any(bare) else "no effect detected")
            + "; linear probe on the frozen features vs zero-shot: "
            + (f"ER {direction} (intervals do not overlap)" if any(e for e, _ in probe) else "no effect detected") + ".")
    return line, details


# --- H5: the loss -----------------------------------------------------------------------------------------------

def _loss_plan(b, config):
    b.clip(1.0, config.train_size), b.supervised("diverse", "text_match"), b.simclr_finetune()


def _loss_keys(config):
    n = config.train_size
    return [f"simclr_tm_n{n}", clip_key(1.0, n), supervised_key("diverse", "text_match", n)]


def _loss_verdict(rows, lookup):
    simclr, clip_row, sup = (rows + [None, None, None])[:3]
    details = [compare(simclr, clip_row)[1], compare(simclr, sup)[1]] if simclr and clip_row and sup else []
    if not (simclr and clip_row):
        return "Not enough configurations to compare.", details
    effect, _ = compare(simclr, clip_row)
    diff = simclr["effective_robustness"] - clip_row["effective_robustness"]
    line = ("SimCLR + text-matched labels vs CLIP on the same diverse data: "
            + (f"ER differs by {pp(diff)} (intervals do not overlap): the loss matters here." if effect
               else "intervals overlap, no effect of the contrastive image–text loss detected."))
    return line, details


REGISTRY: dict[str, Hypothesis] = {h.name: h for h in (
    Hypothesis("size", "H1 · Training-set size", "Does more data make CLIP robust, or only more accurate?",
               _size_plan, lambda c: [clip_key(1.0, s) for s in sorted(set(c.sizes))], _size_verdict, "train_size"),
    Hypothesis("distribution", "H2 · Training distribution",
               "Does the training distribution (narrow vs diverse, and mixtures) set the robustness?",
               _distribution_plan, lambda c: [clip_key(f, c.train_size) for f in sorted(set(c.mixture))],
               _distribution_verdict, "diverse_fraction"),
    Hypothesis("language_train", "H3 · Language supervision at training time",
               "Does training on captions instead of labels, on the same images, give robustness?",
               _language_train_plan, _language_train_keys, _language_train_verdict),
    Hypothesis("language_test", "H4 · Language at test time",
               "Do the prompts matter, and does a classifier fitted on the ID data keep the robustness?",
               _language_test_plan, _language_test_keys, _language_test_verdict),
    Hypothesis("loss", "H5 · The contrastive loss",
               "Is the contrastive image–text loss needed, or does SimCLR + text-matched labels do as well?",
               _loss_plan, _loss_keys, _loss_verdict),
)}
HYPOTHESES = tuple(REGISTRY)
TITLES = {name: h.title for name, h in REGISTRY.items()}
QUESTIONS = {name: h.question for name, h in REGISTRY.items()}
