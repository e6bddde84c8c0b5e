"""The settings of ``clipshift finetune``: :class:`FinetuneConfig` read from YAML with dotted overrides,
validated where they enter, the input check, and the names every part of the recipe shares.

Configuration (YAML; every key but ``model``, ``sources``, ``eval_sets`` and ``baseline`` optional)::

    out: runs/finetune
    model: runs/quickstart/checkpoints/contrastive_diverse  # a clipshift CLIP checkpoint folder, or an
    pretrained: null                  # open_clip architecture (ViT-B-32) with a local weights file here
    modes: [full, linear-probe]       # full | linear-probe | lp-ft; the first is WiSE-FT's endpoint
    classes: world                    # world | imagenet | a text file with one class name per line
    templates: auto                   # auto (world's prompts for world classes, else openai) | world | openai
                                      # | simple | a file with one {} template per line
    labels: source                    # source (the sources' labels) | text_match (from captions)
    synonyms: null
    image_size: null                  # default: the model's input size
    samples: null
    seed: 0                           # data mixture, probe hold-out split, training order and augmentation
    sources: [{type: csv, path: data/train.csv}]   # as in `clipshift train` (world, csv, imagenet_captions, webdataset)
    train: {epochs: 10, batch_size: 256, lr: 3.0e-5, weight_decay: 0.1, warmup_steps: 500, checkpoint_every: 0}
    probe: {weight_decay: [1.0e-8, 1.0e-7, 1.0e-6, 1.0e-5, 1.0e-4, 1.0e-3], max_iter: 1000, holdout: 0.2}
    eval_root: null                   # folder the eval_sets are relative to
    eval_sets: [test, v2, sketch]     # ImageFolder trees (names → folders as a mapping, or folders); with
                                      # classes: imagenet, ImageNet-family names are read as distributed
    id_dataset: null                  # the in-distribution set (default: the first)
    baseline: runs/quickstart/results.csv   # any table `clipshift er` reads: its rows with group 'baseline'
    baseline_filter: null             # (all rows without such), narrowed by a regular expression or in1k-only
    alphas: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]
    eval_batch_size: 256
    bootstrap: 1000
    requires: null                    # a sentence added to missing-input errors (how to make the inputs)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...data.eval_sets import eval_set_entries, eval_set_folder
from ...data.sources import source_type
from ...robustness.tables import BASELINE_SELECTORS
from ...train.loop import TrainConfig
from ..common.settings import build_settings, read_settings
from ..common.training import TrainRunConfig

MODES = ("full", "linear-probe", "lp-ft")
ZERO_SHOT = "zeroshot"
MODEL_NAME = {"full": "full", "linear-probe": "linear_probe", "lp-ft": "lp_ft"}
GROUP = {ZERO_SHOT: "zero-shot", "full": "full fine-tuning", "linear-probe": "linear probe", "lp-ft": "LP-FT"}
WISE_GROUP = "WiSE-FT"
DEFAULT_ALPHAS = [round(0.1 * i, 1) for i in range(11)]
WEIGHT_FILES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def wise_name(alpha: float, endpoint: str) -> str:
    """The model id of θ(α): the zero-shot model at 0, the fine-tuned `endpoint` at 1, else ``wiseft_a<α>``."""
    return ZERO_SHOT if alpha == 0 else endpoint if alpha == 1 else f"wiseft_a{alpha:g}"


def mode_of(model: str) -> str:
    """The mode a model id of this recipe comes from: a key of :data:`MODEL_NAME`, ``zeroshot`` or ``wise-ft``."""
    modes = {name: mode for mode, name in MODEL_NAME.items()}
    return modes.get(model, ZERO_SHOT if model == ZERO_SHOT else "wise-ft")


@dataclass
class ProbeSettings:
    """The linear probe's L2 penalty (a list: chosen by accuracy on a held-out `holdout` fraction of
    the training data, then refitted on all of it) and L-BFGS iterations; Radford et al. sweep the
    penalty on held-out data and run L-BFGS for at most 1000 iterations."""

    weight_decay: float | list = field(default_factory=lambda: [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3])
    max_iter: int = 1000
    holdout: float = 0.2

    def penalties(self) -> list[float]:
        return [float(v) for v in (self.weight_decay if isinstance(self.weight_decay, list) else [self.weight_decay])]

    def validate(self) -> "ProbeSettings":
        values = self.penalties()
        if not values or any(v < 0 for v in values):
            raise ValueError(f"probe.weight_decay: expected a number >= 0 or a list of them, got {self.weight_decay!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ValueError(f"probe.max_iter must be an integer >= 1, got {self.max_iter!r}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"probe.holdout must be in (0, 1), got {self.holdout!r}")
        return self


def crabbe_recipe() -> TrainConfig:
    """Crabbé et al.'s fine-tuning recipe: 10 epochs, batch 256, lr 3e-5, AdamW (weight decay 0.1),
    cosine schedule after 500 warm-up steps."""
    return TrainConfig(objective="finetune", epochs=10, batch_size=256, lr=3e-5, weight_decay=0.1, warmup_steps=500)


@dataclass
class FinetuneConfig:
    out: str = "runs/finetune"
    model: str = ""
    pretrained: str | None = None
    modes: list | str = field(default_factory=lambda: ["full"])
    classes: str = "world"
    templates: str = "auto"
    labels: str = "source"
    synonyms: str | None = None
    image_size: int | None = None
    samples: int | None = None
    seed: int = 0
    sources: list = field(default_factory=list)
    train: TrainConfig = field(default_factory=crabbe_recipe)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    eval_root: str | None = None
    eval_sets: list | dict = field(default_factory=list)
    id_dataset: str | None = None
    baseline: str | None = None
    baseline_filter: str | None = None
    alphas: list = field(default_factory=lambda: list(DEFAULT_ALPHAS))
    eval_batch_size: int = 256
    bootstrap: int = 1000
    requires: str | None = None

    def resolved(self) -> "FinetuneConfig":
        """A copy with what the run derives from the settings: ``modes`` as a list, the WiSE-FT
        ``alphas`` sorted with both endpoints, and ``train.objective`` 'finetune' (cross-entropy
        through the head, whatever the file says)."""
        modes = [self.modes] if isinstance(self.modes, str) else list(self.modes)
        alphas = self.alphas
        if isinstance(alphas, list) and alphas and all(_is_alpha(a) for a in alphas):
            alphas = sorted({float(a) for a in alphas} | {0.0, 1.0})
        return replace(self, modes=modes, alphas=alphas, train=replace(self.train, objective="finetune"))

    def validate(self) -> "FinetuneConfig":
        """Checks every setting; changes none (:meth:`resolved` derives what the run needs)."""
        if not self.model:
            raise ValueError("model: give the CLIP model to fine-tune (a clipshift checkpoint folder, or an open_clip "
                             "architecture with pretrained: a weights file)")
        modes = [self.modes] if isinstance(self.modes, str) else self.modes
        unknown = [m for m in modes if m not in MODES]
        if not modes or unknown or len(set(modes)) != len(modes):
            raise ValueError(f"modes: expected distinct modes among {list(MODES)}, got {self.modes!r}")
        if not self.sources:
            raise ValueError("sources: need at least one labelled training source (as in `clipshift train`)")
        if not isinstance(self.eval_sets, (list, dict)) or len(self.eval_sets) < 2:
            raise ValueError(f"eval_sets: need the in-distribution set and at least one shift, got {self.eval_sets!r}")
        if self.id_dataset is not None and self.id_dataset not in eval_set_entries(self.eval_sets):
            raise ValueError(f"id_dataset {self.id_dataset!r} is not among the eval_sets "
                             f"{list(eval_set_entries(self.eval_sets))}")
        if not self.baseline:
            raise ValueError("baseline: effective robustness needs a table of baseline models (any results table "
                             "`clipshift er` reads)")
        bad = [a for a in self.alphas if not _is_alpha(a)] if isinstance(self.alphas, list) else [self.alphas]
        if not self.alphas or bad:
            raise ValueError(f"alphas: every WiSE-FT mixing weight must be a number in [0, 1], got {self.alphas!r}")
        for name in ("eval_batch_size", "bootstrap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.baseline_filter is not None and self.baseline_filter not in BASELINE_SELECTORS:
            re.compile(self.baseline_filter)
        self.probe.validate()
        self.data_config()  # checks sources, labels and the training settings as `clipshift train` does
        return self

    def eval_paths(self) -> dict[str, Path]:
        """Evaluation set name → folder (relative to `eval_root` when given), by the rule of
        :func:`~clipshift.data.eval_sets.open_eval_set`."""
        root = self.eval_root or "."
        entries = eval_set_entries(self.eval_sets)
        return {name: eval_set_folder(name, root, folder, self.classes) for name, folder in entries.items()}

    @property
    def id_name(self) -> str:
        return self.id_dataset or next(iter(eval_set_entries(self.eval_sets)))

    def data_config(self, architecture: str = "clipshift-small", image_size: int | None = None) -> TrainRunConfig:
        """The training data as `clipshift train` reads it (validated there): labelled images."""
        return TrainRunConfig(out=self.out, architecture=architecture, objective="finetune", init_from=self.model,
                              classes=self.classes, labels=self.labels, synonyms=self.synonyms,
                              image_size=image_size or self.image_size or 32, samples=self.samples, seed=self.seed,
                              sources=self.sources, train=replace(self.train)).validate()


def load_finetune_config(path=None, overrides: dict | None = None) -> FinetuneConfig:
    """The defaults, updated by the YAML file at `path`, then by dotted `overrides`; resolved and
    validated. ``train.seed`` follows ``seed`` unless set."""
    values = read_settings(path, overrides, "fine-tuning config")
    train = values.get("train")
    if isinstance(train, dict) and "seed" not in train or train is None:
        values["train"] = {**(train or {}), "seed": values.get("seed", FinetuneConfig.seed)}
    return build_settings(FinetuneConfig, values, "settings").resolved().validate()


def _is_alpha(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= 1


def check_inputs(config: FinetuneConfig) -> None:
    """FileNotFoundError listing every input file or folder the configuration names that is missing,
    followed by the configuration's `requires` sentence."""
    wanted = [("model", config.model)] if _is_path(config.model) else []
    if config.pretrained and (_is_path(config.pretrained) or config.pretrained.endswith(WEIGHT_FILES)):
        wanted.append(("pretrained", config.pretrained))
    for i, source in enumerate(config.sources):
        for key in source_type(source, f"sources[{i}]").file_keys:
            if source.get(key):
                wanted.append((f"sources[{i}].{key}", source[key]))
    wanted += [(f"eval_sets.{name}", path) for name, path in config.eval_paths().items()]
    wanted.append(("baseline", config.baseline))
    missing = [f"{key}: {path}" for key, path in wanted if not Path(path).exists()]
    if missing:
        hint = f"\n{config.requires}" if config.requires else ""
        raise FileNotFoundError("missing inputs:\n  " + "\n  ".join(missing) + hint)


def _is_path(name: str) -> bool:
    """Whether a model or weights name is a path (not an open_clip name, tag or hub id)."""
    return not name.startswith(("hf-hub:", "timm/")) and ("/" in name or "\\" in name)
