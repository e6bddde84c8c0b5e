"""The quickstart's settings: presets, the YAML loader (the recipes' one settings loader), validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...parallel import resolve_jobs
from ...train.loop import TrainConfig
from ..common.settings import load_settings, settings_yaml
from ..common.world import BaselineRun, WorldSpec, check_baselines

__all__ = ["PRESETS", "QuickstartConfig", "TINY", "config_to_yaml", "load_config"]


@dataclass
class QuickstartConfig:
    seed: int = 0
    architecture: str = "clipshift-small-bow"
    image_size: int = 32
    train_size: int = 8000
    eval_size: int = 1200
    adversarial_size: int = 600
    workers: int = 2  # processes generating the world
    jobs: int = 0  # models trained at once, one process each (0: one per CPU; 1: in this process)
    supervised: TrainConfig = field(default_factory=lambda: TrainConfig("supervised", epochs=6, batch_size=128, lr=2e-3))
    contrastive: TrainConfig = field(default_factory=lambda: TrainConfig("contrastive", epochs=10, batch_size=64, lr=2e-3))
    # The baseline: supervised models on `narrow` of many sizes, epochs, augmentation and image
    # towers (as imagenet-testbed's many ImageNet models), plus `diverse`-trained ones for the
    # two-ID-test-set fit (Shi et al. 2023), five of them so that the plane's `diverse` direction
    # rests on more than a few models (its bootstrap resamples within each training distribution).
    # New runs go last: a run's seed is its position, so the earlier models stay as they were.
    baselines: list[BaselineRun] = field(default_factory=lambda: [
        BaselineRun(300, 6), BaselineRun(600, 6), BaselineRun(1200, 6), BaselineRun(2500, 6),
        BaselineRun(5000, 6), BaselineRun(8000, 2), BaselineRun(2500, 4, augment=False),
        BaselineRun(8000, 4), BaselineRun(2500, 6, architecture="clipshift-tiny-bow"),
        BaselineRun(600, 6, distribution="diverse"), BaselineRun(1500, 6, distribution="diverse"),
        BaselineRun(4000, 6, distribution="diverse"), BaselineRun(1000, 6, distribution="diverse"),
        BaselineRun(2500, 6, distribution="diverse"),
    ])
    reference: BaselineRun = field(default_factory=lambda: BaselineRun(4000, 4))
    diverse_label_source: str = "text_match"  # labels of the supervised diverse model: text_match | true
    # Per-distribution overrides of the world's registry, e.g.
    # {"diverse": {"styles": {"photo": 0.7, "sketch": 0.3}, "factor_rate": 0.1}}
    distributions: dict[str, dict] = field(default_factory=dict)

    def world(self) -> WorldSpec:
        """The world this quickstart generates (its settings of the world, composed)."""
        return WorldSpec.of(self)

    def distribution(self, name: str):
        """The world's distribution `name` with this config's overrides applied and validated."""
        return self.world().distribution(name)

    def validate(self) -> "QuickstartConfig":
        """Checks every setting; changes none."""
        self.world().validate()
        resolve_jobs(self.jobs)
        check_baselines(self.baselines, self.reference)
        if self.diverse_label_source not in ("text_match", "true"):
            raise ValueError(f"diverse_label_source must be 'text_match' or 'true', got {self.diverse_label_source!r}")
        self.supervised.validate()
        self.contrastive.validate()
        return self


TINY = dict(
    train_size=2400, eval_size=300, adversarial_size=120, workers=2,  # the default image tower: CLIP learns
    supervised=dict(epochs=6, batch_size=64), contrastive=dict(epochs=8, batch_size=64),
    baselines=[dict(train_size=200, epochs=4), dict(train_size=600, epochs=6),
               dict(train_size=1200, epochs=6), dict(train_size=2400, epochs=6),
               dict(train_size=600, epochs=6, distribution="diverse"),
               dict(train_size=2400, epochs=4, distribution="diverse")],
    reference=dict(train_size=1200, epochs=4),
)
PRESETS: dict[str, dict] = {"default": {}, "tiny": TINY}


def load_config(preset: str = "default", path: str | Path | None = None, overrides: dict | None = None,
                ) -> QuickstartConfig:
    """A preset, updated by a YAML file, updated by dotted `overrides`; validated."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    return load_settings(QuickstartConfig, path, overrides, base=PRESETS[preset]).validate()


def config_to_yaml(config: QuickstartConfig) -> str:
    return settings_yaml(config)
