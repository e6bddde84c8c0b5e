"""Probes of image representations after Crabbé et al., *Interpreting CLIP: Insights on the
Robustness to ImageNet Distribution Shifts* (TMLR 2024), for any model the package loads.

- :mod:`.activations`: h = f_v(x) (and hooked intermediate layers) over image tensors or an
  ImageNet-family :class:`~clipshift.data.imagenet.EvalSuite`, cacheable.
- :mod:`.outliers`: per-example kurtosis over the dimensions of h (3 for Gaussian; excess = κ − 3),
  the per-dimension activation profile, outlier dimensions (mean |activation| above
  :data:`OUTLIER_RATIO` × the median dimension's).
- :mod:`.pruning`: zero the k largest dimensions (or k random ones, seeded) before the head.
- :mod:`.concepts`: linear (logistic, L-BFGS) probes per concept with held-out AUC; encoded and
  unique concept counts; concept labels from the embedded world or from Broden.
- :mod:`.cka`: linear CKA and minibatch CKA (unbiased HSIC), as a matrix across models.
- :mod:`.analysis` / :mod:`.run`: everything for a set of models, ``probe.csv``, figures and a
  markdown section; :func:`probe_run` / :func:`probe_section` on a quickstart run directory.
- :mod:`.pipeline`: :func:`probe_models`, open_clip / timm / clipshift models on ImageNet-family
  data (what ``clipshift probe --model`` runs; the command's parser is :mod:`clipshift.cli_probe`).
"""

from __future__ import annotations

import importlib

from ._defaults import AUC_THRESHOLD, DEFAULT_KS, OUTLIER_RATIO, REAL_DATASETS

# Public names → submodule. Loaded on first use, so that ``clipshift.cli_probe`` (imported when the
# command line is built) does not pull in torch, open_clip and matplotlib.
_EXPORTS = {
    "activations": ("Activations", "LayerRecorder", "classifier_head", "collect_activations", "representation",
                    "zero_shot_classifier"),
    "analysis": ("ModelProbe", "ProbeConfig", "ProbeResult", "analyze", "markdown_section", "write_outputs"),
    "cka": ("MinibatchCKA", "cka_matrix", "hsic_unbiased", "linear_cka", "minibatch_cka"),
    "concepts": ("ConceptDataset", "LogisticProbe", "auc_score", "concept_probes", "count_concepts", "fit_logistic",
                 "load_broden", "world_concepts"),
    "outliers": ("activation_profile", "importance_order", "kurtosis", "kurtosis_summary", "outlier_dimensions"),
    "pruning": ("prune", "pruning_experiment", "summarize_pruning"),
    "pipeline": ("probe_models",),
    "run": ("probe_run", "probe_section"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(["AUC_THRESHOLD", "DEFAULT_KS", "OUTLIER_RATIO", "REAL_DATASETS", *_MODULE_OF])


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
