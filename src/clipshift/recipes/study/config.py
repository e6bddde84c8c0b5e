"""The study's settings: the world, architecture, baseline and trainers (composed of the recipes'
shared parts: :class:`~clipshift.recipes.common.world.WorldSpec`, :class:`BaselineRun`) and its own,
and where the data come from (the embedded world, a folder laid out like it, or real sources)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ...data.eval_sets import eval_set_entries
from ...data.sources import source_type
from ...parallel import resolve_jobs
from ...train.loop import TrainConfig
from ..common.settings import load_settings, merge_settings, read_settings
from ..common.world import BaselineRun, WorldSpec, check_baselines
from .hypotheses import HYPOTHESES

WORLD_SHIFTS = ("v2", "sketch", "rendition", "objectnet", "adversarial")
DISTRIBUTIONS = ("narrow", "diverse")
SIZE_SCHEDULES = ("equal_steps", "equal_epochs")
# H6: each shift's own domain in the world, by the attributes every image carries (style; factors: any
# object-net-like factor). Real data name a domain with exclude_captions (a regex) or exclude_files.
WORLD_DOMAINS = {"sketch": {"styles": ["sketch"]},
                 "rendition": {"styles": ["cartoon", "pattern", "painting", "mosaic"]},
                 "objectnet": {"factors": True}}
DOMAIN_KEYS = {"styles", "factors", "exclude_captions", "exclude_files"}
WORLD_DOMAIN_KEYS = {"styles", "factors"}


@dataclass
class StudyConfig:
    """See ``configs/fang2022.yaml`` (the world) and ``configs/fang2022-imagenet.yaml`` (real data)."""

    # the world and the models, as the quickstart names them (fields in the order of its settings)
    seed: int = 0
    architecture: str = "clipshift-small-bow"
    image_size: int = 32
    train_size: int = 4000
    eval_size: int = 1200
    adversarial_size: int = 600
    workers: int = 2  # processes generating the world
    jobs: int = 0  # models trained at once, one process each (0: one per CPU; 1: in this process)
    supervised: TrainConfig = field(default_factory=lambda: TrainConfig("supervised", epochs=6, batch_size=128, lr=2e-3))
    contrastive: TrainConfig = field(default_factory=lambda: TrainConfig("contrastive", epochs=20, batch_size=64,
                                                                         lr=2e-3))
    baselines: list[BaselineRun] = field(default_factory=lambda: [
        BaselineRun(300, 6), BaselineRun(600, 6), BaselineRun(1000, 6), BaselineRun(1500, 6),
        BaselineRun(2500, 6), BaselineRun(4000, 2), BaselineRun(4000, 4), BaselineRun(4000, 6),
        BaselineRun(1500, 4, augment=False), BaselineRun(1500, 6, architecture="clipshift-tiny-bow"),
    ])
    reference: BaselineRun = field(default_factory=lambda: BaselineRun(2000, 4))
    diverse_label_source: str = "text_match"  # (the quickstart's; the study labels diverse data per hypothesis)
    distributions: dict[str, dict] = field(default_factory=dict)  # overrides of the world's registry
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sizes: list[int] = field(default_factory=lambda: [2000, 4000])  # H1, CLIP on diverse data
    size_schedule: str = "equal_steps"  # H1: equal_steps (every size the largest's optimizer steps) | equal_epochs
    mixture: list[float] = field(default_factory=lambda: [0.0, 0.33, 0.67, 1.0])  # H2, diverse fractions
    hypotheses: list[str] = field(default_factory=lambda: list(HYPOTHESES))
    # H5: SimCLR sees the images as often as CLIP (epochs >= contrastive.epochs); its fine-tune runs until the
    # accuracy on a held-out tenth of its text-matched rows has not improved for `patience` epochs
    simclr: TrainConfig = field(default_factory=lambda: TrainConfig("simclr", epochs=20, batch_size=128, lr=2e-3))
    simclr_finetune: TrainConfig = field(default_factory=lambda: TrainConfig(
        "supervised", epochs=30, batch_size=128, lr=1e-3, holdout=0.1, patience=3))
    # H6: shift -> its domain, removed from `diverse` (default: WORLD_DOMAINS on the embedded world)
    exposure: dict | None = None
    diverse_pool: int | None = None  # images of the world's `diverse` set (default: train_size; 2x with exposure)
    probe_weight_decay: float = 1e-4  # L2 of the H4 linear probe
    probe_images: int = 10000  # at most this many labelled narrow training images fit the H4 probe
    bootstrap: int = 1000  # per-model ER bootstrap draws (er.csv)
    probes: bool = True  # representation probes (Crabbé et al.) on the seed-0 models (embedded world only)
    # Data. None of these: the embedded world, generated into the run folder. `data_root`: a folder laid
    # out like the exported world (train_narrow.csv, train_diverse.csv, one ImageFolder tree per
    # evaluation set). `data`: per training distribution (narrow, diverse), a list of sources as
    # `clipshift train` takes them (imagenet_captions, csv, webdataset, world; files and shards mix).
    data_root: str | None = None
    data: dict | None = None
    classes: str | None = None  # world | imagenet | a file of class names or of ImageNet wnids
    class_names: str | None = None  # (older name of `classes` for a data_root)
    templates: str | None = None  # zero-shot templates: world (default on world data) | openai | simple | a file
    # Evaluation: the world's trees (data_root or the generated world), or ImageNet-family suites
    # under `eval_root` (names as `clipshift eval --data`: imagenet, imagenet-v2, imagenet-sketch, ...).
    eval_root: str | None = None
    eval_sets: list | dict | None = None  # as `clipshift finetune` takes them: names (folders under eval_root)
    # or name → folder; the in-distribution set is `id_dataset` if listed, else the first; the rest are the shifts
    id_dataset: str = "test"
    shifts: list[str] = field(default_factory=lambda: list(WORLD_SHIFTS))

    @property
    def embedded(self) -> bool:
        """True when the study generates the embedded world."""
        return self.data_root is None and self.data is None

    def world(self) -> WorldSpec:
        """The world this study generates (its settings of the world, composed)."""
        return WorldSpec.of(self)

    def distribution(self, name: str):
        """The world's distribution `name` with this config's overrides applied and validated."""
        return self.world().distribution(name)

    def resolved(self) -> "StudyConfig":
        """A copy with what the study derives from its settings: ``classes`` from the older
        ``class_names``, and with ``eval_sets`` the in-distribution set (``id_dataset`` if listed,
        else the first) and the ``shifts`` (the others)."""
        out = self
        if self.class_names is not None and self.classes is None:
            out = replace(out, classes=self.class_names)
        if self.eval_sets is not None and isinstance(self.eval_sets, (list, dict)):
            names = list(eval_set_entries(self.eval_sets))
            if names:
                id_dataset = self.id_dataset if self.id_dataset in names else names[0]
                out = replace(out, id_dataset=id_dataset, shifts=[n for n in names if n != id_dataset])
        return out

    def validate(self) -> "StudyConfig":
        """Checks every setting; changes none (:meth:`resolved` derives what the study needs)."""
        self.world().validate()
        resolve_jobs(self.jobs)
        check_baselines(self.baselines, self.reference)
        self.supervised.validate()
        self.contrastive.validate()
        self.simclr.validate()
        self.simclr_finetune.validate()
        if self.simclr.objective != "simclr" or self.simclr_finetune.objective != "supervised":
            raise ValueError("simclr.objective must be 'simclr' and simclr_finetune.objective 'supervised'")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {self.seeds}")
        unknown = sorted(set(self.hypotheses) - set(HYPOTHESES))
        if unknown or not self.hypotheses:
            raise ValueError(f"hypotheses: unknown {unknown}; choose among {list(HYPOTHESES)}")
        if "size" in self.hypotheses and len(set(self.sizes)) < 2:
            raise ValueError(f"sizes needs at least 2 distinct sizes for the size hypothesis, got {self.sizes}")
        bad = [n for n in self.sizes if not 1 <= n <= self.train_size]
        if bad:
            raise ValueError(f"sizes {bad} must lie in [1, train_size={self.train_size}]")
        bad = [f for f in self.mixture if not 0 <= f <= 1]
        if bad:
            raise ValueError(f"mixture fractions {bad} must lie in [0, 1]")
        if "distribution" in self.hypotheses and len(set(self.mixture)) < 2:
            raise ValueError(f"mixture needs at least 2 fractions, got {self.mixture}")
        if self.size_schedule not in SIZE_SCHEDULES:
            raise ValueError(f"size_schedule must be one of {list(SIZE_SCHEDULES)}, got {self.size_schedule!r}")
        if "loss" in self.hypotheses and self.simclr.epochs < self.contrastive.epochs:
            raise ValueError(f"simclr.epochs {self.simclr.epochs} < contrastive.epochs {self.contrastive.epochs}: the "
                             "loss hypothesis gives SimCLR at least the image passes CLIP gets on the same images")
        if self.diverse_pool is not None and self.diverse_pool < self.train_size:
            raise ValueError(f"diverse_pool {self.diverse_pool} must be at least train_size {self.train_size}")
        off = [b.name() for b in self.baselines if b.distribution != "narrow"]
        if off:
            raise ValueError(f"the study's baseline is supervised models on narrow data; got {off}")
        too_big = [b.train_size for b in [*self.baselines, self.reference] if b.train_size > self.train_size]
        if too_big:
            raise ValueError(f"baseline/reference sizes {too_big} exceed train_size={self.train_size}")
        self._validate_data()
        return self

    def _validate_data(self) -> None:
        classes = self.classes if self.classes is not None else self.class_names
        if self.data_root is not None and self.data is not None:
            raise ValueError("give either data_root (a folder laid out like the exported world) or data "
                             "(sources per distribution), not both")
        if not self.embedded and classes is None:
            raise ValueError("data_root/data need classes: 'imagenet', or a text file of class names or ImageNet wnids")
        if self.data is not None:
            if not isinstance(self.data, dict) or sorted(self.data) != sorted(DISTRIBUTIONS):
                raise ValueError(f"data: expected a mapping with the keys {list(DISTRIBUTIONS)} (a list of "
                                 f"`clipshift train` sources each), got {self.data!r:.200}")
            for name, sources in self.data.items():
                if not isinstance(sources, list) or not sources or not all(isinstance(s, dict) for s in sources):
                    raise ValueError(f"data.{name}: expected a non-empty list of sources (mappings with a type), "
                                     f"got {sources!r:.200}")
            if self.eval_root is None:
                raise ValueError("data (real sources) needs eval_root: the folder holding the evaluation sets")
        if self.eval_sets is not None:
            self._check_eval_sets()
        if not self.shifts or self.id_dataset in self.shifts:
            raise ValueError(f"shifts must name at least one set other than {self.id_dataset!r}, got {self.shifts}")
        if self.embedded and sorted(set(self.shifts) - set(WORLD_SHIFTS)):
            raise ValueError(f"the embedded world has the shifts {list(WORLD_SHIFTS)}; got {self.shifts}")
        if "exposure" in self.hypotheses:
            self._validate_exposure()

    def domains(self) -> dict[str, dict]:
        """H6: shift -> the domain removed from the training data for it (``exposure``, else the world's
        domains of the shifts studied when the data are the world's)."""
        if self.exposure is not None:  # a domain of a shift not studied in this run is left aside
            return {s: d for s, d in self.exposure.items() if s in self.shifts}
        return {s: d for s, d in WORLD_DOMAINS.items() if s in self.shifts} if self.data is None else {}

    def pool_size(self) -> int:
        """Images of the world's `diverse` training set: enough to keep `train_size` after removing a domain."""
        if self.diverse_pool is not None:
            return self.diverse_pool
        return 2 * self.train_size if "exposure" in self.hypotheses else self.train_size

    def _validate_exposure(self) -> None:
        from ...data.imagenet import IMAGENET_SUITES

        known = {*self.shifts, *WORLD_SHIFTS, *IMAGENET_SUITES}
        unknown = sorted(set(self.exposure or {}) - known)
        if unknown:
            raise ValueError(f"exposure: {unknown} name no shift; the shifts here are {self.shifts}")
        domains = self.domains()
        how = ("name, per shift, the images of its domain: {SHIFT: {exclude_captions: REGEX}} or {SHIFT: "
               "{exclude_files: FILE}} (a text file of image paths); on a world-like folder also {styles: [...]} "
               "or {factors: true}")
        if not domains or not isinstance(domains, dict):
            raise ValueError(f"exposure: no domain to remove on these data; {how}, or drop 'exposure' from hypotheses")
        for shift, domain in domains.items():
            if not isinstance(domain, dict) or not domain or set(domain) - DOMAIN_KEYS:
                raise ValueError(f"exposure.{shift}: expected a mapping with keys among {sorted(DOMAIN_KEYS)}, "
                                 f"got {domain!r:.200}; {how}")
            if self.data is not None and set(domain) & WORLD_DOMAIN_KEYS:
                raise ValueError(f"exposure.{shift}: styles/factors are attributes of the world's images; real "
                                 f"sources need {how}")
        listed = [shift for shift, domain in domains.items() if "exclude_files" in domain]
        if listed and self.data is not None and any(source_type(s).streams for s in self.data["diverse"]):
            raise ValueError(f"exposure.{listed[0]}: exclude_files lists image files, and the samples of the diverse "
                             f"webdataset shards are not files; name the domain with exclude_captions (a regex "
                             f"over the captions), or drop 'exposure' from hypotheses")


    def _check_eval_sets(self) -> None:
        if not isinstance(self.eval_sets, (list, dict)) or len(eval_set_entries(self.eval_sets)) < 2:
            raise ValueError(f"eval_sets: need the in-distribution set and at least one shift, got {self.eval_sets!r}")
        resolved = self.resolved()
        if (resolved.id_dataset, resolved.shifts) != (self.id_dataset, self.shifts):
            raise ValueError("eval_sets: the settings are not resolved (call config.resolved() first: the "
                             "in-distribution set and the shifts come from eval_sets)")


QUICK = dict(
    architecture="clipshift-tiny-bow", train_size=600, eval_size=200, adversarial_size=80, workers=2,
    sizes=[300, 600], mixture=[0.0, 0.5, 1.0],
    supervised=dict(epochs=4, batch_size=64), contrastive=dict(epochs=3, batch_size=64),
    simclr=dict(epochs=3, batch_size=64), simclr_finetune=dict(epochs=6, batch_size=64, patience=2),
    baselines=[dict(train_size=150, epochs=3), dict(train_size=300, epochs=4), dict(train_size=600, epochs=4)],
    reference=dict(train_size=300, epochs=3), bootstrap=200,
)


def load_study_config(path=None, overrides: dict | None = None, quick: bool = False) -> StudyConfig:
    """Defaults ← the YAML file ← the quick preset (``quick``) ← dotted `overrides`; resolved and validated."""
    values = read_settings(path, None, "study config")
    values = read_settings(None, overrides, base=merge_settings(values, QUICK) if quick else values)
    return load_settings(StudyConfig, base=values).resolved().validate()
