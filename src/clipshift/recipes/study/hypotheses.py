"""The six hypotheses, as a registry of small objects.

Five are Fang et al.'s (2022) candidate causes of CLIP's effective robustness; the sixth
(``exposure``) is Mayilvahanan et al.'s question whether it comes from training images that
already look like the test shift. A :class:`Hypothesis` says which configurations it needs
(``plan``: calls on the plan builder of :mod:`.plan`), which of them it compares, in display order
(``keys``; ``rows`` where the rows are per shift), how its verdict is computed (:mod:`.verdicts`),
the published finding it tests and the findings that agree with it, and how its figure lays
the rows out (``axis``). A seventh hypothesis is one more entry in :data:`REGISTRY`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .keys import clip_key, simclr_key, supervised_key
from .verdicts import (distribution_verdict, exposure_rows, exposure_verdict, language_test_verdict,
                       language_train_verdict, loss_verdict, size_verdict)

__all__ = ["Hypothesis", "REGISTRY", "HYPOTHESES", "TITLES", "QUESTIONS", "size_epochs"]

FANG = "Fang et al. (2022)"


@dataclass(frozen=True)
class Hypothesis:
    name: str
    title: str
    question: str
    plan: Callable  # (builder, config) → None: asks the builder for the configurations it needs
    keys: Callable  # config → configuration keys compared, in display order
    verdict: Callable  # (rows, Context) → Verdict
    published: str  # the published finding this hypothesis tests, with its source
    agrees_with: tuple[str, ...]  # computed findings that agree with the published one
    axis: str = "categorical"  # figure's x axis: train_size (log), diverse_fraction, categorical, or shift
    rows: Callable | None = None  # (config, Context) → rows, where they are not the keys' average rows

    def agreement(self, finding: str) -> str:
        return "agrees" if finding in self.agrees_with else "differs"


# --- H1: size ----------------------------------------------------------------------------------------------------

def size_epochs(config, size: int) -> int:
    """CLIP's epochs at training-set size `size`: the configured epochs (``equal_epochs``), or as many as
    give the largest size's optimizer steps (``equal_steps``: full batches only, as the contrastive loss
    trains)."""
    epochs, batch = config.contrastive.epochs, config.contrastive.batch_size
    if config.size_schedule == "equal_epochs":
        return epochs
    largest = max(config.sizes)
    steps = max(largest // batch, 1) * epochs
    return max(epochs, math.ceil(steps / max(size // batch, 1)))


def _size_plan(b, config):
    for size in sorted(set(config.sizes)):
        b.clip(1.0, size, epochs=size_epochs(config, size))


# --- H2: distribution --------------------------------------------------------------------------------------------

def _distribution_plan(b, config):
    for fraction in sorted(set(config.mixture)):
        b.clip(float(fraction), config.train_size)


# --- H3: language at training time -------------------------------------------------------------------------------

def _language_train_plan(b, config):
    n = config.train_size
    b.clip(0.0, n), b.clip(1.0, n), b.supervised("narrow", "true"), b.supervised("diverse", "text_match")


def _language_train_keys(config):
    n = config.train_size
    return [clip_key(0.0, n), supervised_key("narrow", "true", n), clip_key(1.0, n),
            supervised_key("diverse", "text_match", n)]


# --- H4: language at test time -----------------------------------------------------------------------------------

def _language_test_plan(b, config):
    for fraction in (0.0, 1.0):
        b.clip(fraction, config.train_size, heads=("ensemble", "bare", "probe"))


def _language_test_keys(config):
    n = config.train_size
    return [f"{clip_key(f, n)}{suffix}" for f in (1.0, 0.0) for suffix in ("", "_bare", "_probe")]


# --- H5: the loss ------------------------------------------------------------------------------------------------

def _loss_plan(b, config):
    b.clip(1.0, config.train_size), b.supervised("diverse", "text_match"), b.simclr_finetune()


def _loss_keys(config):
    n = config.train_size
    return [simclr_key(n), clip_key(1.0, n), supervised_key("diverse", "text_match", n)]


# --- H6: exposure to the shift's own domain ----------------------------------------------------------------------

def _exposure_plan(b, config):
    b.clip(1.0, config.train_size)
    for shift in config.domains():
        b.clip(1.0, config.train_size, without=shift)


def _exposure_keys(config):
    n = config.train_size
    return [clip_key(1.0, n)] + [clip_key(1.0, n, without=s) for s in config.domains()]


REGISTRY: dict[str, Hypothesis] = {h.name: h for h in (
    Hypothesis("size", "H1 · Training-set size", "Does more data make CLIP robust, or only more accurate?",
               _size_plan, lambda c: [clip_key(1.0, s) for s in sorted(set(c.sizes))], size_verdict,
               f"{FANG}: more data of the same distribution moves a model along the baseline; size does not "
               "explain CLIP's effective robustness.", ("no effect",), "train_size"),
    Hypothesis("distribution", "H2 · Training distribution",
               "Does the training distribution (narrow vs diverse, and mixtures) set the robustness?",
               _distribution_plan, lambda c: [clip_key(f, c.train_size) for f in sorted(set(c.mixture))],
               distribution_verdict, f"{FANG}: the training distribution determines effective robustness.",
               ("effect",), "diverse_fraction"),
    Hypothesis("language_train", "H3 · Language supervision at training time",
               "Does training on captions instead of labels, on the same images, give robustness?",
               _language_train_plan, _language_train_keys, language_train_verdict,
               f"{FANG}: captions instead of labels on the same images do not change effective robustness.",
               ("no effect",)),
    Hypothesis("language_test", "H4 · Language at test time",
               "Do the prompts matter, and does a classifier fitted on the ID data keep the robustness?",
               _language_test_plan, _language_test_keys, language_test_verdict,
               f"{FANG}: the prompts (templates) used at test time do not change effective robustness.",
               ("no effect",)),
    Hypothesis("loss", "H5 · The contrastive loss",
               "Is the contrastive image–text loss needed, or does SimCLR + text-matched labels do as well?",
               _loss_plan, _loss_keys, loss_verdict,
               f"{FANG}: SimCLR pre-training with text-matched fine-tuning on the same data is as robust as CLIP; "
               "the loss does not explain it.", ("no effect",)),
    Hypothesis("exposure", "H6 · Exposure to the shift's own domain",
               "Does CLIP stay robust on a shift when no training image comes from that shift's domain?",
               _exposure_plan, _exposure_keys, exposure_verdict,
               "Mayilvahanan et al. (ICLR 2025), CLIP trained on style-separated LAION: without a domain's images, "
               "performance on that domain drops sharply (their ICLR 2024 study, pruning only the images most "
               "similar to the test sets, found it largely persists).", ("shrinks", "vanishes"), "shift",
               rows=lambda config, ctx: exposure_rows(config.domains(), config.train_size, ctx)),
)}
HYPOTHESES = tuple(REGISTRY)
TITLES = {name: h.title for name, h in REGISTRY.items()}
QUESTIONS = {name: h.question for name, h in REGISTRY.items()}
