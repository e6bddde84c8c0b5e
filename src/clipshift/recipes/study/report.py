"""``report.md`` of a study run: the question, the setup, one section per hypothesis (verdict,
table, figure), the baseline, the probes and the run's facts. Every number is read from the
computed tables; nothing is typed by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...io import atomic_write_text
from ...formatting import markdown_table, pct, pp
from ...report_html import write_html_report
from ...robustness.explore import explorer_link
from ...robustness.protocols import protocol_section
from .hypotheses import QUESTIONS, TITLES


def _count(value) -> str:
    return "–" if value is None or pd.isna(value) else f"{value:,.0f}"


def hypothesis_table(rows: list[dict]) -> pd.DataFrame:
    """The rows a hypothesis compares: accuracy, ER with its interval and the training budget."""
    return pd.DataFrame([{
        "configuration": r["label"], **({"shift": r["dataset"]} if "dataset" in r else {}), "seeds": int(r["seeds"]),
        "ID accuracy": pct(r["id_accuracy"]),
        ("shift accuracy" if "dataset" in r else "avg shift accuracy"): pct(r["shift_accuracy"]),
        "ER": pp(r["effective_robustness"]), "95% interval": f"[{pp(r['ci_low'])}, {pp(r['ci_high'])}]",
        "seed sd": "–" if pd.isna(r["er_sd"]) else f"{100 * r['er_sd']:.1f} pp",
        "steps": _count(r.get("steps")), "images seen": _count(r.get("images_seen")),
    } for r in rows])


def verdict_table(sections: list[dict]) -> pd.DataFrame:
    """Per hypothesis: the published finding, the computed finding, whether they agree, what was held equal."""
    return pd.DataFrame([{
        "hypothesis": TITLES[s["hypothesis"]], "published finding": s["published"], "computed": s["finding"],
        "agreement": s["agreement"] + (" (caveat below)" if s.get("caveat") else ""),
        "held equal": s["held_equal"].removeprefix("held equal: "),
    } for s in sections])


def _setup(config, facts: dict) -> str:
    if config.embedded:
        data = (f"the embedded world: `narrow` (photo-like, the ImageNet role) and `diverse` (many styles, the web "
                f"role) training sets of {config.train_size} captioned images each, {config.eval_size} images per "
                f"evaluation set")
    elif config.data_root is not None:
        data = f"the data under `{config.data_root}`"
    else:
        kinds = {d: ", ".join(f"`{s.get('type')}`" for s in config.data[d]) for d in config.data}
        data = (f"real sources, `narrow`: {kinds['narrow']}; `diverse`: {kinds['diverse']} (up to {config.train_size} "
                f"images per model, as `clipshift train` runs under `runs/`); evaluation sets under "
                f"`{config.eval_root}`; classes `{config.classes}`")
    shifts = ", ".join(f"`{s}`" for s in config.shifts)
    n_base = len(config.baselines)
    match = "; ".join(f"`{d}` {100 * m['match_rate']:.0f}% of captions matched"
                      + (f", precision {100 * m['precision']:.1f}%" if "precision" in m else "")
                      for d, m in facts.get("text_match", {}).items())
    return f"""- Data: {data}. In-distribution set `{config.id_dataset}`; shifts {shifts}.
- Model: `{config.architecture}`, one image tower for every objective. CLIP: {config.contrastive.epochs} epochs,
  batch {config.contrastive.batch_size}, lr {config.contrastive.lr:g} ({_schedule(config)}); supervised:
  {config.supervised.epochs} epochs, batch {config.supervised.batch_size}, lr {config.supervised.lr:g}; SimCLR:
  {config.simclr.epochs} epochs (at least CLIP's passes over the same images), then fine-tuning on text-matched
  labels {_stopping(config.simclr_finetune)}.
- Budgets: every table gives each configuration's optimizer steps and images seen (means over seeds; a
  fine-tune's include its pre-training's), so what was held equal can be read off.
- Text matching (captions → labels): {match}.
- Baseline: {n_base} supervised models on `narrow` data of different sizes and epochs, a line fitted in logit
  space on the average shift accuracy (Taori et al.).
- Seeds {', '.join(map(str, config.seeds))} for every configuration (subset, initialisation and data order).
  ER is a configuration's mean over seeds; its interval is the 95% t-interval over seeds. Per-model
  bootstrap intervals (test-set sampling and the baseline fit) are in `er.csv`.
- A verdict compares intervals: overlapping intervals mean no effect was detected at this number of seeds."""


def _schedule(config) -> str:
    if "size" not in config.hypotheses:
        return "every model"
    if config.size_schedule == "equal_steps":
        return "at the sizes of H1, a smaller set trains more epochs: every size gets the largest's optimizer steps"
    return "at the sizes of H1, every size the same epochs: a smaller set gets fewer steps"


def _stopping(train) -> str:
    if train.holdout and train.patience:
        return (f"until the accuracy on a held-out {100 * train.holdout:g}% of its rows has not improved for "
                f"{train.patience} epochs (at most {train.epochs}), keeping the best epoch's weights")
    return f"for {train.epochs} epochs"


def _section(s: dict) -> str:
    """One hypothesis: question, computed verdict beside the published finding, details, table, figures."""
    details = "\n".join(f"- {d}" for d in s["details"])
    caveat = f"\n\n**Caveat:** {s['caveat']}" if s.get("caveat") else ""
    return f"""## {TITLES[s['hypothesis']]}

*{QUESTIONS[s['hypothesis']]}*

**Verdict:** {s['verdict']}

**Published:** {s['published']} **Computed:** {s['finding']}, so this run **{s['agreement']}**.
**What was compared:** {s['held_equal']}.{caveat}

{details}

{markdown_table(hypothesis_table(s['rows']))}

![{TITLES[s['hypothesis']]}](figures/{Path(s['figure']).name})
{s.get('extra', '')}"""


def _run_note(facts: dict) -> str:
    reused = facts["models"] - facts["models_trained_this_run"]
    note = (f"This run trained all {facts['models']} models." if not reused else
            f"This run trained {facts['models_trained_this_run']} of {facts['models']} models and reused "
            f"{reused} from an earlier run into the same folder.")
    timed = facts.get("train_seconds", {})
    if timed:
        note += (f" Training took {sum(timed.values()) / 60:.1f} min in all for the {len(timed)} models whose "
                 "training time is recorded (summed over the runs that trained them).")
    return note


def describe_domain(domain: dict) -> str:
    """'styles sketch, cartoon', 'any object-net-like factor', 'captions matching /x/', 'files in F'."""
    parts = []
    if domain.get("styles"):
        parts.append("images of style " + ", ".join(f"`{s}`" for s in domain["styles"]))
    if domain.get("factors"):
        parts.append("images with any object-net-like factor" if domain["factors"] is True else
                     "images with the factors " + ", ".join(f"`{f}`" for f in domain["factors"]))
    if domain.get("exclude_captions"):
        parts.append(f"captions matching `{domain['exclude_captions']}`")
    if domain.get("exclude_files"):
        parts.append(f"the images listed in `{domain['exclude_files']}`")
    return " or ".join(parts)


def _domains_line(config, facts: dict) -> str:
    counts = facts.get("domains") or {}
    if "exposure" not in config.hypotheses or not config.domains():
        return ""
    parts = []
    for shift, domain in config.domains().items():
        left = counts.get(shift, {}).get("diverse")
        removed = f" ({left['removed']} of {left['removed'] + left['left']} diverse images removed)" if left else ""
        parts.append(f"`{shift}`: {describe_domain(domain)}{removed}")
    return (f"- H6 exposure: CLIP on `diverse` data ({config.pool_size()} generated) with one shift's domain removed, "
            f"at the same size ({config.train_size}) and steps as full `diverse`; " + "; ".join(parts) + ".\n")


def _protocols(run_dir: Path) -> str:
    """Each dataset's evaluation protocol, once, from the study's ``results.csv``."""
    path = run_dir / "results.csv"
    return protocol_section(pd.read_csv(path)) if path.is_file() else ""


def write_study_report(run_dir, config, summary: pd.DataFrame, fits: pd.DataFrame, sections: list[dict],
                       facts: dict, probe_md: str = "") -> Path:
    run_dir = Path(run_dir)
    overview = "\n".join(f"- **{TITLES[s['hypothesis']]}** "
                         f"({'agrees with' if s['agreement'] == 'agrees' else 'differs from'} the published finding). "
                         f"{s['verdict']}" for s in sections)
    fit_lines = "\n".join(f"- `{r.dataset}`: slope {r.slope:.3f}, intercept {r.intercept:.3f}, R² {r.r2:.3f}, "
                          f"{int(r.num_models)} baseline models" for r in fits.itertuples())
    adv = facts.get("adversarial")
    adv_line = (f"- `adversarial`: {adv['kept']} images kept of {adv['pool_drawn']} drawn from the hard pool "
                f"(reference model's pool accuracy {100 * adv['reference_pool_accuracy']:.1f}%).\n" if adv else "")
    text = f"""# clipshift study: what gives CLIP its effective robustness?

## Question

Fang et al. (2022) asked which of five causes makes CLIP robust to natural distribution shifts:
the training-set size, the training distribution, language supervision at training time, language
at test time (prompts), or the contrastive loss; Mayilvahanan et al. (2024, 2025) asked a sixth: whether
it comes from training images of the shift's own domain. This study trains every configuration with
{len(config.seeds)} seeds and measures each model's effective robustness (ER): its accuracy on the shifts
above the line that ID-trained supervised models follow.

## Verdicts

{markdown_table(verdict_table(sections))}

{overview}

{explorer_link()}

## Setup

{_setup(config, facts)}
{_domains_line(config, facts)}{adv_line}
{chr(10).join(_section(s) for s in sections)}
## Baseline fits

{fit_lines}

{_protocols(run_dir)}{probe_md.strip() + chr(10) + chr(10) if probe_md else ""}## Run

Wall-clock {facts['seconds_total']:.0f} s ({facts['seconds_total'] / 60:.1f} min). {_run_note(facts)} Seeds:
{', '.join(map(str, config.seeds))}. Versions: {', '.join(f'{k} {v}' for k, v in facts['versions'].items())}. The
configuration is in `config.yaml`; every number is in `results.csv` (per model and dataset), `er.csv` (per
model), `summary.csv` (per configuration, average over shifts), `summary_shifts.csv` (per configuration and
shift) and `verdicts.json`.
"""
    path = run_dir / "report.md"
    atomic_write_text(path, text)
    write_html_report(run_dir)
    return path
