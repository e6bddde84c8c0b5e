"""``report.md`` of a study run: the question, the setup, one section per hypothesis (verdict,
table, figure), the baseline, the probes and the run's facts. Every number is read from the
computed tables; nothing is typed by hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...io import atomic_write_text
from ...formatting import markdown_table, pct, pp
from ...report_html import write_html_report
from .hypotheses import QUESTIONS, TITLES


def hypothesis_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "configuration": r["label"], "seeds": int(r["seeds"]), "ID accuracy": pct(r["id_accuracy"]),
        "avg shift accuracy": pct(r["shift_accuracy"]), "ER": pp(r["effective_robustness"]),
        "95% interval": f"[{pp(r['ci_low'])}, {pp(r['ci_high'])}]",
        "seed sd": "–" if pd.isna(r["er_sd"]) else f"{100 * r['er_sd']:.1f} pp",
    } for r in rows])


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
  batch {config.contrastive.batch_size}, lr {config.contrastive.lr:g}; supervised: {config.supervised.epochs}
  epochs, batch {config.supervised.batch_size}, lr {config.supervised.lr:g}; SimCLR: {config.simclr.epochs} epochs
  then {config.simclr_finetune.epochs} epochs of fine-tuning on text-matched labels.
- Text matching (captions → labels): {match}.
- Baseline: {n_base} supervised models on `narrow` data of different sizes and epochs, a line fitted in logit
  space on the average shift accuracy (Taori et al.).
- Seeds {', '.join(map(str, config.seeds))} for every configuration (subset, initialisation and data order).
  ER is a configuration's mean over seeds; its interval is the 95% t-interval over seeds. Per-model
  bootstrap intervals (test-set sampling and the baseline fit) are in `er.csv`.
- A verdict compares intervals: overlapping intervals mean no effect was detected at this number of seeds."""


def write_study_report(run_dir, config, summary: pd.DataFrame, fits: pd.DataFrame, sections: list[dict],
                       facts: dict, probe_md: str = "") -> Path:
    run_dir = Path(run_dir)
    overview = "\n".join(f"- **{TITLES[s['hypothesis']]}.** {s['verdict']}" for s in sections)
    parts = []
    for s in sections:
        details = "\n".join(f"- {d}" for d in s["details"])
        parts.append(f"""## {TITLES[s['hypothesis']]}

*{QUESTIONS[s['hypothesis']]}*

**Verdict:** {s['verdict']}

{details}

{markdown_table(hypothesis_table(s['rows']))}

![{TITLES[s['hypothesis']]}](figures/{Path(s['figure']).name})
""")
    fit_lines = "\n".join(f"- `{r.dataset}`: slope {r.slope:.3f}, intercept {r.intercept:.3f}, R² {r.r2:.3f}, "
                          f"{int(r.num_models)} baseline models" for r in fits.itertuples())
    minutes = facts["seconds_total"] / 60
    reused = facts["models"] - facts["models_trained_this_run"]
    run_note = (f"This run trained all {facts['models']} models." if not reused else
                f"This run trained {facts['models_trained_this_run']} of {facts['models']} models and reused "
                f"{reused} from an earlier run into the same folder.")
    timed = facts.get("train_seconds", {})
    if timed:
        run_note += (f" Training took {sum(timed.values()) / 60:.1f} min in all for the {len(timed)} models whose "
                     "training time is recorded (summed over the runs that trained them).")
    adv = facts.get("adversarial")
    adv_line = (f"- `adversarial`: {adv['kept']} images kept of {adv['pool_drawn']} drawn from the hard pool "
                f"(reference model's pool accuracy {100 * adv['reference_pool_accuracy']:.1f}%).\n" if adv else "")
    text = f"""# clipshift study: what gives CLIP its effective robustness?

## Question

Fang et al. (2022) asked which of five causes makes CLIP robust to natural distribution shifts:
the training-set size, the training distribution, language supervision at training time, language
at test time (prompts), or the contrastive loss. This study trains every configuration with
{len(config.seeds)} seeds and measures each model's effective robustness (ER): its average accuracy over the
shifts above the line that ID-trained supervised models follow.

## Verdicts

{overview}

## Setup

{_setup(config, facts)}
{adv_line}
{chr(10).join(parts)}
## Baseline fits

{fit_lines}

{probe_md.strip() + chr(10) + chr(10) if probe_md else ""}## Run

Wall-clock {facts['seconds_total']:.0f} s ({minutes:.1f} min). {run_note} Seeds: {', '.join(map(str, config.seeds))}.
Versions: {', '.join(f'{k} {v}' for k, v in facts['versions'].items())}. The configuration is in `config.yaml`;
every number is in `results.csv` (per model and dataset), `er.csv` (per model), `summary.csv` (per
configuration) and `verdicts.json`.
"""
    path = run_dir / "report.md"
    atomic_write_text(path, text)
    write_html_report(run_dir)
    return path
