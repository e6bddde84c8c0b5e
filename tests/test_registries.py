"""The two registries every recipe reads: training source types (``data.sources.SOURCE_TYPES``) and
the one opener of evaluation sets (``data.eval_sets.open_eval_set``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from clipshift.data import EvalImageFolder, load_all
from clipshift.data.eval_sets import eval_set_entries, eval_set_folder, open_eval_set, open_world_sets, suite_tensors
from clipshift.data.imagenet import DEFAULT_FOLDERS
from clipshift.data.sources import SOURCE_TYPES, SourceType, file_rows, register_source, source_type
from clipshift.recipes.common.settings import build_settings, load_settings
from clipshift.recipes.common.training import TrainRunConfig, build_training_data, check_sources, load_train_config
from clipshift.recipes.finetune.config import FinetuneConfig
from clipshift.world.shapes import CLASS_NAMES
from miniature_real import noise_image, noise_tree

GOLDFISH, TENCH = "n01443537", "n01440764"


# --- training source types ------------------------------------------------------------------------------------------

def _jsonl_rows(source: dict, space):
    """A source type the project does not ship: one JSON object per line, {"image": ..., "text": ...}."""
    base = Path(source["file"]).parent
    entries = [json.loads(line) for line in Path(source["file"]).read_text().splitlines() if line.strip()]
    return [str(base / e["image"]) for e in entries], [e["text"] for e in entries], None


@pytest.fixture
def jsonl_type(monkeypatch):
    monkeypatch.setitem(SOURCE_TYPES, "jsonl", None)
    kind = register_source(SourceType("jsonl", frozenset({"type", "weight", "file", "size", "subset_seed"}),
                                      ("file",), "files", file_keys=("file",), rows=_jsonl_rows))
    yield kind


def test_the_shipped_source_types_and_what_they_declare():
    assert sorted(SOURCE_TYPES) == ["csv", "imagenet_captions", "webdataset", "world"]
    assert [n for n, k in sorted(SOURCE_TYPES.items()) if k.streams] == ["webdataset"]
    assert [n for n, k in sorted(SOURCE_TYPES.items()) if k.file_backed] == ["csv", "imagenet_captions"]
    assert SOURCE_TYPES["imagenet_captions"].required == ("json", "root")
    with pytest.raises(ValueError, match=r"sources\[2\]: unknown type 'parquet'; known: \['csv', 'imagenet_captions', "
                                         r"'webdataset', 'world'\]"):
        source_type({"type": "parquet"}, "sources[2]")
    with pytest.raises(ValueError, match="storage must be files, generated or stream"):
        register_source(SourceType("odd", frozenset({"type"}), (), "cloud"))


def test_a_registered_source_type_trains_through_clipshift_train(tmp_path, jsonl_type):
    """`clipshift train` reads its sources through the registry: a type registered here is checked,
    read, subset and text-matched like the shipped ones, with no change to the training code."""
    lines = []
    for i in range(6):
        noise_image(tmp_path / f"img{i}.png", size=(16, 16), seed=i)
        lines.append(json.dumps({"image": f"img{i}.png", "text": f"a photo of a {CLASS_NAMES[i % 3]}"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    config = load_train_config(None, {"objective": "supervised", "image_size": 16, "sources": [
        {"type": "jsonl", "file": str(tmp_path / "data.jsonl"), "size": 4, "subset_seed": 0}]})
    read = check_sources(config)
    data, summary = build_training_data(config, tokenizer=None, progress=False, read=read)
    kept = np.sort(np.random.default_rng(0).permutation(6)[:4])
    assert summary["sources"] == [{"type": "jsonl", "rows": 6, "after_class_filter": 6, "kept": 4}]
    assert data.labels.tolist() == [i % 3 for i in kept] and summary["text_match_rate"] == 1.0
    assert tuple(data.images.shape) == (4, 3, 16, 16)
    with pytest.raises(ValueError, match=r"sources\[0\] \(jsonl\): unknown keys \['path'\]; known: "):
        load_train_config(None, {"sources": [{"type": "jsonl", "file": "x", "path": "y"}]})
    with pytest.raises(ValueError, match=r"missing \['file'\] \(a jsonl source needs \['file'\]\)"):
        check_sources(load_train_config(None, {"sources": [{"type": "jsonl"}]}))
    assert file_rows({"type": "jsonl", "file": str(tmp_path / "data.jsonl")}, None)[1][1] == \
        f"a photo of a {CLASS_NAMES[1]}"


def test_streams_are_told_apart_by_the_registry_not_by_name(tmp_path, jsonl_type):
    """A registered file-backed type mixes with a stream: its rows are one part, the shards another."""
    from clipshift.data.mixture import RowPart
    from clipshift.data.shards import write_shards

    lines = []
    for i in range(4):
        noise_image(tmp_path / f"img{i}.png", size=(16, 16), seed=i)
        lines.append(json.dumps({"image": f"img{i}.png", "text": f"a photo of a {CLASS_NAMES[i % 3]}"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines))
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    urls = write_shards(images, [f"a {CLASS_NAMES[i % 3]}" for i in range(6)], tmp_path / "shards")
    config = load_train_config(None, {"objective": "simclr", "image_size": 16, "train.batch_size": 4, "sources": [
        {"type": "jsonl", "file": str(tmp_path / "data.jsonl")}, {"type": "webdataset", "urls": urls, "size": 5}]})
    data, summary = build_training_data(config, tokenizer=None, progress=False, read=check_sources(config))
    assert isinstance(data.parts[0], RowPart) and data.parts[1].length == 5 and len(data) == 8  # 9 samples
    assert [s.get("streamed", False) for s in summary["sources"]] == [False, True]


# --- evaluation sets ------------------------------------------------------------------------------------------------

def test_one_rule_for_names_and_folders(tmp_path):
    root = tmp_path / "data"
    noise_tree(root / "objectnet-1.0" / "images", ["banana"], ".png", per_class=1)
    noise_tree(root / "imagenet-r", [TENCH, GOLDFISH], ".jpg", per_class=2)
    noise_tree(root / "mine", ["tench", "goldfish"], ".png", per_class=1)
    # ImageNet-family names in an ImageNet class space: read as distributed, at their distributed folder
    suite = open_eval_set("imagenet-r", root)
    assert suite.target_names == [TENCH, GOLDFISH] and suite.num_classes == 1000
    assert eval_set_folder("objectnet", root) == root / DEFAULT_FOLDERS["objectnet"]
    # ... or at a folder named as the set when only that one is there (as fine-tuning's lists name them)
    noise_tree(root / "imagenet-sketch", [TENCH], ".jpg", per_class=1)
    assert eval_set_folder("imagenet-sketch", root) == root / "imagenet-sketch"
    assert open_eval_set("imagenet-sketch", root).target_names == [TENCH]
    # a folder given for the set, relative to the root; any other name is an ImageFolder tree over the classes
    names = ["tench", "goldfish", "great white shark"]
    tree = open_eval_set("own", root, folder="mine", classes=names)
    assert tree.root == root / "mine" and tree.target_names == names and tree.class_indices == [0, 1]
    # the same ImageNet-family name outside an ImageNet class space is a plain tree
    assert open_eval_set("imagenet-r", root, folder="mine", classes=names).target_names == names
    # a wnid subset is the label space the suite is scored in
    (tmp_path / "two.txt").write_text(f"{GOLDFISH}\n{TENCH}\n")
    assert open_eval_set("imagenet-r", root, classes=str(tmp_path / "two.txt")).num_classes == 2
    assert eval_set_entries(["test", "world/v2"]) == {"test": None, "v2": "world/v2"}
    assert eval_set_entries({"id": "a/b"}) == {"id": "a/b"}


def test_world_sets_are_scored_over_every_world_class_and_decode_as_before(tmp_path):
    world = tmp_path / "world"
    for c, name in enumerate(CLASS_NAMES[:3]):
        for i in range(2):
            noise_image(world / "sketch" / name / f"{i}.png", size=(8, 8), seed=10 * c + i)
    suite = open_eval_set("sketch", world, classes="world")
    assert suite.class_indices is None and suite.num_classes == len(CLASS_NAMES)  # never masked to 3 classes
    assert [s.samples for s in open_world_sets(world, ["sketch"])] == [suite.samples]
    images, labels = suite_tensors(suite, progress=False)
    before, before_labels, _ = load_all(EvalImageFolder(world / "sketch", list(CLASS_NAMES)), progress=False)
    assert torch.equal(images, before) and torch.equal(labels, before_labels)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_finetune_settings_find_their_sets_by_the_same_rule(tmp_path):
    config = FinetuneConfig(model="m", sources=[{"type": "csv", "path": "t.csv"}], baseline="b.csv",
                            eval_root=str(tmp_path), eval_sets=["test", "imagenet-r", "sub/v2"], classes="imagenet")
    assert config.eval_paths() == {"test": tmp_path / "test", "imagenet-r": tmp_path / "imagenet-r",
                                   "v2": tmp_path / "sub" / "v2"}
    assert config.id_name == "test"


# --- the settings loader --------------------------------------------------------------------------------------------

def test_one_settings_loader_builds_nested_dataclasses_and_names_bad_settings(tmp_path):
    config = load_settings(TrainRunConfig, None, {"train.epochs": 3, "objective": "supervised"})
    assert config.train.epochs == 3 and config.train.batch_size == 64  # merged into the default section
    assert config.train.objective == "contrastive"  # built, not resolved: the loader never derives settings
    assert config.resolved().train.objective == "supervised" and config.train.objective == "contrastive"
    with pytest.raises(ValueError, match=r"config\.train\.lr: expected float, got 'fast' \(str\)"):
        build_settings(TrainRunConfig, {"train": {"lr": "fast"}})
    with pytest.raises(ValueError, match=r"config: unknown keys \['epoch'\]"):
        build_settings(TrainRunConfig, {"epoch": 1})


def test_validate_checks_and_never_rewrites(tmp_path):
    """Every recipe's validate() leaves its settings as they were; what a run derives (the study's
    shifts from eval_sets, fine-tuning's mode list and WiSE-FT endpoints, the training loop's
    objective) comes from resolved(), a copy."""
    import copy

    from clipshift.recipes.quickstart import QuickstartConfig
    from clipshift.recipes.study import StudyConfig

    study = StudyConfig(data_root=str(tmp_path), class_names="world", eval_sets=["v2", "test", "sketch"],
                        id_dataset="test", hypotheses=["loss"])
    finetune = FinetuneConfig(model="m", modes="full", sources=[{"type": "world", "size": 10}], baseline="b.csv",
                              eval_sets=["test", "v2"], alphas=[0.5])
    train = TrainRunConfig(objective="supervised")
    for config in (QuickstartConfig(), study.resolved(), finetune.resolved(), finetune, train):
        before = copy.deepcopy(config)
        assert config.validate() is config and config == before, type(config).__name__
    assert study.resolved().shifts == ["v2", "sketch"] and study.resolved().classes == "world"
    assert (study.shifts, study.classes) == (StudyConfig().shifts, None)  # resolving made a copy
    with pytest.raises(ValueError, match=r"call config.resolved\(\) first"):
        study.validate()
    assert finetune.resolved().modes == ["full"] and finetune.resolved().alphas == [0.0, 0.5, 1.0]
    assert finetune.resolved().train.objective == "finetune" and finetune.modes == "full"
    assert train.resolved().train.objective == "supervised" and train.train.objective == "contrastive"
