"""Evaluation: one model interface (:class:`~clipshift.models.interface.EvalModel`), one registry of
heads (:mod:`.heads`), one loop with the feature and head caches (:mod:`.loop`), per-image predictions
(:mod:`.predictions`) and protocol stamps (:mod:`.protocol`). ``clipshift eval``,
the quickstart, the study, fine-tuning and the probes all score models through it."""

from .heads import HEADS, HeadSpec, LinearHead, ProbeHead, ZeroShotHead, build_head, register_head, zero_shot_head
from .loop import METRICS, Features, ImageTensors, encode, evaluate
from .predictions import read_predictions, recompute_metrics, write_predictions

__all__ = ["HEADS", "HeadSpec", "LinearHead", "ProbeHead", "ZeroShotHead", "build_head", "register_head",
           "zero_shot_head", "METRICS", "Features", "ImageTensors", "encode", "evaluate", "read_predictions",
           "recompute_metrics", "write_predictions"]
