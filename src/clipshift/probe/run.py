"""The probes on a quickstart run directory: its checkpoints, its exported world and its ``er.csv``.

    from clipshift.probe import probe_run, probe_section
    result = probe_run("runs/quickstart")                  # writes probe.csv and figures/probe_*.png
    markdown = probe_section("runs/quickstart")            # the same, returning the markdown section

What is probed: every checkpoint under ``checkpoints/`` (the baselines, the four main models and the
reference model), h = the image tower's output (what the classifier head or the zero-shot head
reads), on a seeded subsample of at most `max_images` images of the in-distribution set and of
each shift named in ``er.csv``, read through ``world/<set>.attributes.csv``. Pruning scores the
model's own head (the zero-shot head with the quickstart's prompt ensemble for CLIP models), both
from the head registry (:func:`clipshift.evaluate.heads.build_head`).
Concepts are the world's scene attributes (style, colour, fill, background, factors) on the same
images, pooled over the sets (at most `concept_images`, an equal share per set).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data import load_images
from ..evaluate.heads import HeadSpec, build_head
from ..progress import progress_bar
from ..robustness.colours import run_colours
from ..world.captions import ZERO_SHOT_TEMPLATES
from .activations import collect_activations
from .analysis import ModelProbe, ProbeConfig, ProbeResult, analyze, markdown_section, relative_figure_dir, write_outputs
from .concepts import world_concepts

AVERAGE = "average"


def _read_er(run_dir: Path) -> tuple[pd.DataFrame, str, list[str]]:
    path = run_dir / "er.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no er.csv (not a finished quickstart run directory?)")
    er = pd.read_csv(path)
    missing = {"model", "dataset", "id_dataset", "effective_robustness"} - set(er.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    id_dataset = str(er["id_dataset"].iloc[0])
    shifts = list(dict.fromkeys(str(d) for d in er["dataset"] if d != AVERAGE))
    return er, id_dataset, shifts


def _sample(world_dir: Path, name: str, max_images: int, seed: int) -> pd.DataFrame:
    path = world_dir / f"{name}.attributes.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: the probes read each evaluation set through its attributes table")
    table = pd.read_csv(path)
    if len(table) > max_images:
        rng = np.random.default_rng([seed, sum(map(ord, name))])
        table = table.iloc[np.sort(rng.permutation(len(table))[:max_images])]
    return table.reset_index(drop=True)


def _model_dirs(run_dir: Path, models) -> list[tuple[str, Path]]:
    """(name, checkpoint folder) of the models to probe: `models` as a mapping name → folder, or names
    of folders under ``run_dir/checkpoints`` (None: all of them)."""
    if isinstance(models, dict):
        missing = [str(d) for d in models.values() if not (Path(d) / "model.json").is_file()]
        if missing:
            raise FileNotFoundError(f"no checkpoints (model.json) in {missing[:3]}")
        return [(name, Path(d)) for name, d in models.items()]
    root = run_dir / "checkpoints"
    dirs = sorted(p for p in root.iterdir() if (p / "model.json").is_file()) if root.is_dir() else []
    if models is not None:
        wanted = list(models)
        unknown = sorted(set(wanted) - {p.name for p in dirs})
        if unknown:
            raise ValueError(f"no checkpoints for {unknown} under {root}; found {[p.name for p in dirs]}")
        dirs = [p for p in dirs if p.name in set(wanted)]
    if not dirs:
        raise FileNotFoundError(f"{root}: no checkpoints (folders with model.json)")
    return [(p.name, p) for p in dirs]


def probe_run(run_dir, out_dir=None, *, max_images: int = 600, concept_images: int = 1200,
              config: ProbeConfig | None = None, models=None, progress: bool = False,
              markdown_dir=None, cache_dir=None) -> ProbeResult:
    """Probe every model of the quickstart run `run_dir`; write ``probe.csv`` and
    ``figures/probe_magnitudes.png``, ``figures/probe_kurtosis_vs_er.png``, ``figures/probe_cka.png``
    into `out_dir` (default: `run_dir`); return the :class:`ProbeResult` (``.markdown``: the report
    section, figure links relative to `markdown_dir`, default `out_dir`). `models`: checkpoint
    names to probe (default all), or a mapping name → checkpoint folder. Each model is scored with
    the registry's ``linear`` head, or (CLIP) its ``zeroshot`` head with the world's prompt ensemble,
    cached under `cache_dir` when given."""
    from ..models.load import load_model

    start = time.perf_counter()
    config = (config or ProbeConfig()).validate()
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    if max_images < 8:
        raise ValueError(f"max_images must be at least 8, got {max_images}")
    er, id_dataset, shifts = _read_er(run_dir)
    world_dir = run_dir / "world"
    dirs = _model_dirs(run_dir, models)

    names = [id_dataset, *shifts]
    tables = {n: _sample(world_dir, n, max_images, config.seed) for n in names}
    paths = [str(world_dir / p) for n in names for p in tables[n]["filepath"]]
    images = load_images(paths, progress=progress)
    bounds = np.cumsum([0] + [len(tables[n]) for n in names])
    slices = {n: slice(int(bounds[i]), int(bounds[i + 1])) for i, n in enumerate(names)}

    per_set = max(1, concept_images // len(names))
    concept_rows = {n: np.sort(np.random.default_rng([config.seed, 7, i]).permutation(len(tables[n]))[:per_set])
                    for i, n in enumerate(names)}
    concept_attrs = pd.concat([tables[n].iloc[concept_rows[n]] for n in names], ignore_index=True)
    concept_labels = world_concepts(concept_attrs)
    concept_index = torch.as_tensor(np.concatenate([concept_rows[n] + bounds[i] for i, n in enumerate(names)]))

    er_avg = er[er["dataset"] == AVERAGE]
    groups = dict(zip(er_avg["model"], er_avg.get("group", pd.Series([""] * len(er_avg)))))
    probes = []
    with progress_bar(total=len(dirs), desc="probe", unit="model", enabled=progress) as bar:
        for name, directory in dirs:
            model = load_model(str(directory))
            class_index = {c: i for i, c in enumerate(model.class_names)}
            h = collect_activations(model, images, progress=False).features
            sets = {}
            for n in names:
                targets = torch.as_tensor([class_index[c] for c in tables[n]["class_name"]], dtype=torch.long)
                sets[n] = (h[slices[n]], targets)
            head = (build_head("linear", model) if model.has_head else
                    build_head(HeadSpec("zeroshot", templates=ZERO_SHOT_TEMPLATES), model,
                               class_names=model.class_names, cache_dir=cache_dir))
            probes.append(ModelProbe(name, sets, head,
                                     group=str(groups.get(name, model.metadata.get("group", ""))),
                                     concept_features=h[concept_index]))
            bar.update(1)
    result = analyze(probes, id_dataset, shifts, concept_labels=concept_labels, er=er_avg, config=config)
    result.facts = {"representation": "the image tower's output (the input of the linear head, or of the zero-shot "
                                      f"head for CLIP models), {result.summary['n_dims'].iloc[0]} dimensions",
                    "images": f"{len(tables[id_dataset])} `{id_dataset}` images and up to {max_images} of each shift; "
                              f"concepts from the world's scene attributes on {len(concept_labels)} of them "
                              f"({concept_labels.shape[1]} concepts).",
                    "models": len(probes)}
    write_outputs(result, out_dir, colours=run_colours(er))  # the colours of the run's ER figures
    result.facts["seconds"] = time.perf_counter() - start
    figure_dir = relative_figure_dir(markdown_dir if markdown_dir is not None else out_dir, out_dir)
    result.markdown = markdown_section(result, figure_dir=figure_dir)
    return result


def probe_section(run_dir, out_dir=None, **kwargs) -> str:
    """:func:`probe_run` and return only its markdown section (for the quickstart report)."""
    return probe_run(run_dir, out_dir, **kwargs).markdown
