"""The quickstart: generate the world, train, evaluate, fit the baseline, report.

Shows the seeds' headline finding on a CPU in minutes: models trained on ``diverse`` data
sit above the baseline of ``narrow``-trained supervised models whatever their loss, while a
contrastive model trained on ``narrow`` data sits on it.

- :mod:`.config`: :class:`QuickstartConfig`, the ``default`` and ``tiny`` presets, :func:`load_config`.
- :mod:`.run`: :func:`run_quickstart` (the run directory it writes is described there).
- :mod:`.report`: ``report.md``, every number computed from the run's tables.
"""

from .config import PRESETS, TINY, QuickstartConfig, config_to_yaml, load_config
from .run import ID_DATASET, ID_DATASETS, SHIFTS, fit_effective_robustness, model_plan, run_quickstart

__all__ = ["PRESETS", "TINY", "QuickstartConfig", "config_to_yaml", "load_config", "ID_DATASET", "ID_DATASETS",
           "SHIFTS", "fit_effective_robustness", "model_plan", "run_quickstart"]
