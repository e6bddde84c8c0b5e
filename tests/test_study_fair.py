"""What makes the study's comparisons fair: early stopping on held-out rows, equal optimizer steps
across sizes, a shift's domain removed from the training data, and scores kept only for the data
they were computed on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from clipshift.data.sources import class_space, csv_rows
from clipshift.evaluate import ImageTensors
from clipshift.models.factory import ModelSpec, build_model
from clipshift.recipes.study import load_study_config, study_plan, train_run
from clipshift.recipes.study.data import StudyData
from clipshift.recipes.study.hypotheses import size_epochs
from clipshift.recipes.study.run import eval_stamp, fingerprint_data, kept_scores
from clipshift.train.loop import TrainConfig, TrainData, train

DISTRIBUTIONS = {d: [{"type": "csv", "path": f"world/train_{d}.csv"}] for d in ("narrow", "diverse")}


# --- early stopping ---------------------------------------------------------------------------------------------

def _easy_data(n=400, seed=0):
    """Images whose first channel encodes the label: a tiny classifier learns them in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    images = torch.randint(0, 255, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    images[:, 0] = (labels * 25).view(-1, 1, 1).to(torch.uint8)
    return TrainData(images, labels=labels)


def _classifier():
    return build_model(ModelSpec("classifier", "clipshift-tiny-bow", [str(i) for i in range(10)], metadata={}), seed=0)


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(tmp_path):
    spec = ModelSpec("classifier", "clipshift-tiny-bow", [str(i) for i in range(10)], metadata={})
    model = _classifier()
    config = TrainConfig("supervised", epochs=40, batch_size=64, lr=2e-3, holdout=0.2, patience=2)
    history = train(model, _easy_data(), config, progress=False, checkpoint_dir=tmp_path / "ck", spec=spec)
    accuracy = [r["holdout_accuracy"] for r in history]
    best = int(np.argmax(accuracy)) + 1  # the first best epoch
    assert history[-1]["best_epoch"] == best
    assert len(history) == best + 2 < 40  # stopped two epochs without improvement after the best
    assert all(a <= accuracy[best - 1] for a in accuracy[best:])
    assert history[-1]["step"] == len(history) * 5  # 320 training rows (80 held out), batches of 64
    assert history[-1]["images_seen"] == len(history) * 320
    kept = load_file(str(tmp_path / "ck" / "best" / "model.safetensors"))  # the best epoch's weights are the model's
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())


def test_holdout_settings_are_checked():
    with pytest.raises(ValueError, match="patience needs holdout"):
        TrainConfig("supervised", patience=2).validate()
    with pytest.raises(ValueError, match=r"holdout must be in \[0, 0.5\)"):
        TrainConfig("supervised", holdout=0.7).validate()
    data = TrainData(_easy_data().images)  # no labels: nothing to measure accuracy on
    with pytest.raises(ValueError, match="held-out labelled rows"):
        train(_classifier(), data, TrainConfig("supervised", epochs=1, holdout=0.1), progress=False)


# --- a domain removed from a source -----------------------------------------------------------------------------

def _table(tmp_path: Path) -> Path:
    captions = ["a sketch of a star", "a photo of a star", "a cartoon circle", "A SKETCH of a circle", "a star"]
    rows = ["filepath,caption"]
    for i, caption in enumerate(captions):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{caption}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "t.csv"


def test_exclude_files_and_captions_remove_rows_of_a_source(tmp_path):
    table, space = _table(tmp_path), class_space("world")
    paths, captions, _ = csv_rows({"path": str(table), "exclude_captions": "sketch"}, space)
    assert captions == ["a photo of a star", "a cartoon circle", "a star"]  # case-insensitive
    (tmp_path / "drop.txt").write_text("# the cartoon\n2.png\n\n" + str(tmp_path / "4.png") + "\n")
    paths, captions, _ = csv_rows({"path": str(table), "exclude_files": str(tmp_path / "drop.txt"),
                                   "exclude_captions": "sketch"}, space)
    assert captions == ["a photo of a star"] and paths == [str(tmp_path / "1.png")]
    with pytest.raises(ValueError, match="not a regular expression"):
        csv_rows({"path": str(table), "exclude_captions": "(sketch"}, space)
    with pytest.raises(FileNotFoundError, match="exclude_files"):
        csv_rows({"path": str(table), "exclude_files": str(tmp_path / "missing.txt")}, space)
    with pytest.raises(ValueError, match="every row"):
        csv_rows({"path": str(table), "exclude_captions": "."}, space)


# --- the plan: equal steps, exposure ----------------------------------------------------------------------------

def test_sizes_train_the_largest_sizes_steps():
    config = load_study_config(overrides={"sizes": [1000, 2000, 4000]})
    batch = config.contrastive.batch_size
    steps = {n: (n // batch) * size_epochs(config, n) for n in config.sizes}
    assert size_epochs(config, 4000) == config.contrastive.epochs
    assert steps[4000] == 62 * 20 and steps[2000] == 1240 and 1240 <= steps[1000] <= 1240 + 1000 // batch
    plan = {e["name"]: e for e in study_plan(config)}
    assert plan["clip_f100_n2000_s0"]["epochs"] == 40 and plan["clip_f100_n4000_s0"]["epochs"] == 20
    epochs = load_study_config(overrides={"size_schedule": "equal_epochs"})
    assert {e["epochs"] for e in study_plan(epochs) if e["config"].startswith("clip_f100_n")} == {20}


def test_exposure_removes_each_shifts_domain_at_the_same_size():
    config = load_study_config(quick=True)
    plan = {e["name"]: e for e in study_plan(config)}
    domains = {"sketch": {"exclude_files": "x/exclude_sketch.txt"}}
    run = train_run(config, plan["clip_f100_n600_no_sketch_s1"], Path("runs"), DISTRIBUTIONS, domains)
    full = train_run(config, plan["clip_f100_n600_s1"], Path("runs"), DISTRIBUTIONS, domains)
    assert run["sources"] == [{**full["sources"][0], "exclude_files": "x/exclude_sketch.txt"}]
    assert run["train"] == full["train"] and run["sources"][0]["size"] == 600
    with pytest.raises(ValueError, match="no domain is named for the shift 'rendition'"):
        train_run(config, plan["clip_f100_n600_no_rendition_s1"], Path("runs"), DISTRIBUTIONS, domains)


@pytest.mark.parametrize("overrides, message", [
    ({"simclr.epochs": 10}, "simclr.epochs 10 < contrastive.epochs 20"),
    ({"exposure": {"skecth": {"styles": ["sketch"]}}}, "exposure: ['skecth'] name no shift"),
    ({"exposure": {"v2": {"styles": ["sketch"]}}, "shifts": ["sketch"]}, "exposure: no domain to remove"),
    ({"exposure": {"sketch": {"colour": "red"}}}, "exposure.sketch: expected a mapping with keys among"),
    ({"size_schedule": "equal_images"}, "size_schedule must be one of"),
])
def test_unfair_or_malformed_study_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_study_config(overrides=overrides)


def test_exposure_on_real_sources_needs_a_named_domain(tmp_path):
    real = {"data": {d: [{"type": "csv", "path": "t.csv"}] for d in ("narrow", "diverse")}, "classes": "world",
            "eval_root": str(tmp_path)}
    with pytest.raises(ValueError, match="exposure: no domain to remove on these data"):
        load_study_config(overrides=real)
    with pytest.raises(ValueError, match="styles/factors are attributes of the world's images"):
        load_study_config(overrides={**real, "exposure": {"sketch": {"styles": ["sketch"]}}})
    config = load_study_config(overrides={**real, "exposure": {"sketch": {"exclude_captions": "sketch|drawing"}}})
    assert config.domains() == {"sketch": {"exclude_captions": "sketch|drawing"}}


# --- scores kept only for the data they were computed on --------------------------------------------------------

def test_kept_scores_are_stale_when_an_image_changes_under_the_same_name(tmp_path):
    """The reuse is keyed on the evaluation sets' content: an image changed (same set, same size) is not
    scored with the old numbers."""
    config = load_study_config(quick=True)
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    data = StudyData(["a", "b"], {}, {"test": ImageTensors(images.clone(), torch.tensor([0, 1, 0, 1])),
                                      "sketch": ImageTensors(images.clone(), torch.tensor([1, 1, 0, 0]))},
                     probe_set=None, world=True)
    folder = tmp_path / "runs" / "m"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "model.safetensors").write_bytes(b"weights")
    entry = {"name": "m", "heads": ["ensemble"]}
    fingerprint_data(config, data)
    rows = [{"model": "m", "dataset": "test", "value": 0.5}]
    (folder / "eval.json").write_text(json.dumps({"stamp": eval_stamp(entry, folder, data), "rows": rows}))
    assert kept_scores(entry, folder, data) == rows
    data.eval_sets["sketch"].images[2, 0, 3, 3] = 255  # one pixel of one image, nothing else
    fingerprint_data(config, data)
    assert kept_scores(entry, folder, data) is None
