"""``clipshift finetune``: fine-tune a CLIP model (full, linear probe, LP-FT), measure what it costs in
effective robustness, and interpolate back (WiSE-FT). See :mod:`.run` for the recipe and its run folder.

- :mod:`.config`: :class:`FinetuneConfig` (the YAML keys), :func:`load_finetune_config`, the input check.
- :mod:`.model`: the starting point, the zero-shot head, the linear probe.
- :mod:`.eval`: the evaluation sets, every variant scored, the tables.
- :mod:`.run`: :func:`run_finetune`. :mod:`.report`: ``report.md`` and the WiSE-FT figures.
"""

from .config import FinetuneConfig, ProbeSettings, check_inputs, load_finetune_config
from .model import fit_probe_head, init_from_zero_shot, load_clip
from .run import run_finetune

__all__ = ["FinetuneConfig", "ProbeSettings", "check_inputs", "load_finetune_config", "fit_probe_head",
           "init_from_zero_shot", "load_clip", "run_finetune"]
