"""The probes on open_clip / timm / clipshift models over ImageNet-family data, callable from Python:
:func:`probe_models` is what ``clipshift probe --model ...`` runs.

    from clipshift.probe import probe_models
    result = probe_models(["ViT-B-32", "timm/resnet50"], "imagenet,imagenet-r", pretrained=["openai", "a1_in1k"],
                          data_root="data", out="runs/probe", ks=(1, 2, 4))
    result.summary                # one row per model; result.table is OUT/probe.csv

Each model's head comes from the head registry (:func:`clipshift.evaluate.heads.build_head`): a
CLIP model's zero-shot head over ImageNet's class names (cached under the cache folder), any other
model's own linear head, unless `heads` names another.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.eval_sets import open_suites
from ..data.imagenet import EvalSuite, score
from ..distributed import default_device
from ..evaluate.heads import HeadSpec, build_head, imagenet_class_names, resolve_templates
from ..io import atomic_write_text
from ..models.interface import EvalModel
from ..models.load import load_model
from ._defaults import REAL_DATASETS
from .activations import collect_activations
from .analysis import ModelProbe, ProbeConfig, ProbeResult, analyze, markdown_section, write_outputs
from .concepts import load_broden


def probe_models(models: Sequence, datasets: str | Sequence = REAL_DATASETS, *, out, pretrained=None,
                 data_root=None, dataset_roots: Mapping | None = None, max_images: int = 10000, broden=None,
                 broden_categories: Sequence[str] | None = None, concept_images: int = 5000,
                 layers: Sequence[str] = (), templates: str | None = None, heads=None, er=None,
                 config: ProbeConfig | None = None, cache_dir=None, cache: bool = True, batch_size: int = 256,
                 workers: int = 4, device="auto", progress: bool = True, **settings) -> ProbeResult:
    """Probe the image representation h of `models` and write ``OUT/probe.csv`` (model, analysis,
    key, value), ``OUT/figures/probe_*.png`` and ``OUT/probe.md``; return the :class:`ProbeResult`
    (``.table``, ``.summary``, ``.cka``, ``.figures``, ``.markdown``).

    `models`: names (open_clip, ``hf-hub:ORG/NAME``, ``timm/ARCH`` or a clipshift checkpoint folder)
    with `pretrained` (one tag or file per name, None / ``"none"`` for none), ``(name, pretrained)``
    pairs, or loaded :class:`~clipshift.models.interface.EvalModel` objects. `datasets`: suites,
    the first in distribution, comma-separated or a list of names (opened under `data_root`, or at
    `dataset_roots` {name: folder}) or of opened :class:`~clipshift.data.imagenet.EvalSuite`;
    each subsampled (seeded) to at most `max_images`. `broden`: a Broden folder (or a
    :func:`.concepts.load_broden` result) for the concept probes, at most `concept_images` images of
    `broden_categories`. `layers`: intermediate layers whose kurtosis and outliers are also reported
    (in-distribution set only). `templates`: the zero-shot templates of CLIP models (``openai``,
    ``simple``, ``bare`` or a file). `heads`: a :class:`~clipshift.evaluate.heads.HeadSpec` (or kind)
    for every model, or {model name: spec} for some (default: ``zeroshot`` for CLIP models, else
    ``linear``). `er`: ``clipshift er``'s er.csv (path or table) for the kurtosis-vs-ER plot.
    `config` / `settings` (``ks``, ``random_repeats``, ``summary_k``, ``outlier_ratio``,
    ``auc_threshold``, ``cka_batch_size``, ``seed``, ...): :class:`.analysis.ProbeConfig`. Activations
    and zero-shot heads are cached in `cache_dir` (default ``OUT/cache``; ``cache=False``: none).

    Example, on a notebook's loaded model::

        from clipshift.models.load import load_model
        model = load_model("ViT-B-32", "openai")
        result = probe_models([model], ["imagenet"], data_root="data", out="runs/probe", max_images=2000)
    """
    start = time.perf_counter()
    config = replace(config or ProbeConfig(), **settings).validate()
    sources = _sources(models, pretrained)
    suites = [_subsample(suite, max_images, config.seed) for suite in _suites(datasets, data_root, dataset_roots)]
    if broden is not None and not hasattr(broden, "suite"):
        broden = load_broden(broden, categories=list(broden_categories) if broden_categories else None,
                             max_images=concept_images, seed=config.seed, workers=workers)
    device = torch.device(device) if device != "auto" else default_device()
    out = Path(out)
    cache = (Path(cache_dir) if cache_dir else out / "cache") if cache else None
    common = dict(cache_dir=cache, batch_size=batch_size, workers=workers, device=device, progress=progress)
    probes, concept_labels = [], None
    for source in sources:
        model = source if isinstance(source, EvalModel) else load_model(*source)
        probe, labels = _probe_model(model, _head_spec(model, heads, templates), suites, broden, layers, common)
        if labels is not None and concept_labels is not None and len(labels) != len(concept_labels):
            raise ValueError("the models decoded different numbers of Broden images; cannot compare their concepts")
        probes.append(probe)
        concept_labels = labels if labels is not None else concept_labels
    if er is not None:
        table = er if isinstance(er, pd.DataFrame) else pd.read_csv(er)
        er = table[table["dataset"] == "average"] if "dataset" in table.columns else table
    result = analyze(probes, suites[0].name, [s.name for s in suites[1:]], concept_labels=concept_labels, er=er,
                     config=config)
    write_outputs(result, out)
    result.facts = {"representation": "the image encoder output h (CLIP: encode_image; timm: pre-logits features)",
                    "images": f"up to {max_images} images per dataset ({', '.join(s.name for s in suites)}).",
                    "seconds": time.perf_counter() - start}
    result.markdown = markdown_section(result, heading="#")
    atomic_write_text(out / "probe.md", result.markdown)
    return result


def _sources(models: Sequence, pretrained) -> list:
    """Each model as an EvalModel or a (name, pretrained) pair to load."""
    models = [models] if isinstance(models, (str, EvalModel)) else list(models)
    tags = [pretrained] if isinstance(pretrained, str) else list(pretrained or [])
    named = [m for m in models if isinstance(m, str)]
    if tags and len(tags) != len(named):
        raise ValueError(f"give --pretrained once per --model, in order ({len(named)} models, "
                         f"{len(tags)} --pretrained; 'none' for a checkpoint folder)")
    tags = iter(tags or [None] * len(named))
    pairs = [(m, next(tags)) if isinstance(m, str) else m if isinstance(m, EvalModel) else tuple(m) for m in models]
    return [m if isinstance(m, EvalModel) else (m[0], None if m[1] in (None, "", "none") else m[1]) for m in pairs]


def _suites(datasets, data_root, roots) -> list[EvalSuite]:
    if isinstance(datasets, str):
        return open_suites(datasets, data_root, roots)
    datasets = list(datasets)
    if all(isinstance(d, EvalSuite) for d in datasets):
        return datasets
    return open_suites(",".join(datasets), data_root, roots)


def _subsample(suite: EvalSuite, n: int, seed: int) -> EvalSuite:
    if len(suite.samples) <= n:
        return suite
    keep = np.sort(np.random.default_rng([seed, len(suite.name)]).permutation(len(suite.samples))[:n])
    return replace(suite, samples=[suite.samples[i] for i in keep])


def _head_spec(model: EvalModel, heads, templates) -> HeadSpec:
    """The head `heads` names for `model` (see :func:`probe_models`), else its default."""
    spec = heads.get(model.name) if isinstance(heads, Mapping) else heads
    if spec is None:
        spec = HeadSpec("zeroshot" if model.kind == "clip" else "linear")
    spec = HeadSpec(spec) if isinstance(spec, str) else spec
    if spec.kind == "zeroshot" and spec.templates is None:
        spec = replace(spec, templates=resolve_templates(templates))
    return spec


def _probe_model(model: EvalModel, spec: HeadSpec, suites: list[EvalSuite], broden, layers, common: dict):
    """One model's :class:`ModelProbe`, its head built from `spec` by the head registry, and the Broden
    labels of the images it decoded (None without Broden)."""
    sets, layer_stats = {}, {}
    for suite in suites:  # hooked layers on the in-distribution set only
        acts = collect_activations(model, suite, layers=layers if suite is suites[0] else (),
                                   desc=f"{suite.name} ({model.name})", **common)
        sets[suite.name] = (acts.features, acts.targets)
        if suite is suites[0]:
            layer_stats = acts.layers
    head = build_head(spec, model, class_names=imagenet_class_names() if spec.kind == "zeroshot" else None,
                      cache_dir=common["cache_dir"], device=common["device"], progress=common["progress"])
    scorers = {s.name: (lambda logits, targets, s=s: score(logits.cpu(), targets, s)["top1"]) for s in suites}
    concept_features, labels = None, None
    if broden is not None:
        acts = collect_activations(model, broden.suite(), desc=f"broden ({model.name})", **common)
        concept_features = acts.features
        labels = broden.labels.iloc[acts.indices.numpy()].reset_index(drop=True)
    probe = ModelProbe(model.name, sets, _on(head, common["device"]), group=model.metadata.get("library", ""),
                       scorers=scorers, concept_features=concept_features, layers=layer_stats)
    return probe, labels


def _on(head, device):
    """Run `head` on `device` and give CPU logits."""
    def run(h: torch.Tensor) -> torch.Tensor:
        return head(h.to(device)).float().cpu()

    return run
