"""The study on the common data form: ImageNet-Captions as files (narrow) and YFCC-style webdataset
shards (diverse), mixed in the mixture configurations, with the exposure domain named by captions;
miniatures of both and of ImageNet's evaluation suites, a class subset of four wnids, a tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from clipshift.cli import main
from clipshift.recipes.study import HYPOTHESES

from miniature_real import WNIDS, write_data_root, write_imagenet_captions, write_shards, write_wnid_file

SHIFTS = ["imagenet-sketch", "imagenet-r"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("files_and_shards")
    captions = write_imagenet_captions(root / "imagenet-captions", per_class=20)
    shards = write_shards(root / "yfcc", per_class=40, per_shard=24)  # 160 samples, 100 name one class
    write_data_root(root / "eval")
    config = dict(
        data={"narrow": [{"type": "imagenet_captions", "json": str(captions["json"]), "root": str(captions["root"])}],
              "diverse": [{"type": "webdataset", "urls": shards["urls"], "buffer": 50}]},
        classes=str(write_wnid_file(root / "classes.txt", WNIDS)), eval_root=str(root / "eval"),
        id_dataset="imagenet", shifts=SHIFTS, templates="simple", architecture="clipshift-tiny-bow", image_size=32,
        train_size=40, sizes=[20, 40], mixture=[0.0, 0.5, 1.0], seeds=[0], jobs=1, bootstrap=50, probe_images=64,
        contrastive=dict(epochs=2, batch_size=16), supervised=dict(epochs=2, batch_size=16),
        simclr=dict(epochs=2, batch_size=16), simclr_finetune=dict(epochs=2, batch_size=16),
        baselines=[dict(train_size=10, epochs=1), dict(train_size=20, epochs=2), dict(train_size=40, epochs=2)],
        reference=dict(train_size=20, epochs=1),
        exposure={"imagenet-sketch": {"exclude_captions": "kitchen"}})  # a stand-in domain: "a <class> in the kitchen"
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    out = root / "out"
    assert main(["study", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def _run(out, name: str) -> tuple[dict, dict]:
    """(the planned train.yaml, the run's data summary) of model `name`."""
    return (yaml.safe_load((out / "runs" / name / "train.yaml").read_text()),
            yaml.safe_load((out / "runs" / name / "config.yaml").read_text())["data"])


def test_the_study_runs_on_imagenet_captions_files_and_yfcc_shards(study):
    verdicts = json.loads((study / "verdicts.json").read_text())
    assert [v["hypothesis"] for v in verdicts] == list(HYPOTHESES)
    assert (study / "report.html").is_file()
    results = pd.read_csv(study / "results.csv")
    assert set(results["dataset"]) == {"imagenet", *SHIFTS}
    # the mixture: 20 ImageNet-Captions rows and the first 20 samples of the shards, interleaved by weight
    planned, data = _run(study, "clip_f050_n40_s0")
    assert [s["type"] for s in planned["sources"]] == ["imagenet_captions", "webdataset"]
    assert planned["samples"] == 40 and [s["size"] for s in planned["sources"]] == [20, 20]
    assert data["streamed"] and data["images_per_source"] == [16, 16]  # 2 batches of 16 per epoch
    assert data["sources"][0]["kept"] == 20
    assert data["sources"][1]["take"].startswith("the first 20 samples passing the class filter, in shard order")
    # nested takes: the smaller size draws the same shard order (subset_seed) and keeps a prefix
    small, large = (_run(study, f"clip_f100_n{n}_s0")[0]["sources"][0] for n in (20, 40))
    assert small["subset_seed"] == large["subset_seed"] and (small["size"], large["size"]) == (20, 40)


def test_exposure_and_early_stopping_apply_to_the_streamed_diverse_data(study):
    full, without = (_run(study, name)[1]["sources"][0]
                     for name in ("clip_f100_n40_s0", "clip_f100_n40_no_imagenet-sketch_s0"))
    assert "not excluded by exclude_captions" in without["take"] and without["kept"] == full["kept"] == 40
    assert without["samples_read"] > full["samples_read"]  # the kitchen captions passed over
    records = [json.loads(line) for line in (study / "runs" / "simclr_tm_n40_s0" / "metrics.jsonl").read_text()
               .splitlines()]
    assert any("holdout_accuracy" in r for r in records)  # held out of the stream's take
    planned, data = _run(study, "simclr_tm_n40_s0")
    assert planned["sources"][0]["type"] == "webdataset" and data["sources"][0]["labelled"] == 40


def test_the_imagenet_config_with_yfcc_shards_plans_every_run(tmp_path):
    """``configs/fang2022-imagenet.yaml`` with its diverse data as webdataset shards (the alternative it
    names): accepted, exposure included, and every planned run is a valid ``clipshift train`` run."""
    from pathlib import Path

    from clipshift.recipes.common.training import load_train_config
    from clipshift.recipes.study import load_study_config, study_plan, train_run

    settings = yaml.safe_load((Path(__file__).parents[1] / "configs" / "fang2022-imagenet.yaml").read_text())
    settings["data"]["diverse"] = [{"type": "webdataset", "urls": "/data/yfcc15m/{00000..01499}.tar"}]
    path = tmp_path / "shards.yaml"
    path.write_text(yaml.safe_dump(settings))
    config = load_study_config(path)
    runs = {}
    for entry in study_plan(config):
        runs[entry["name"]] = train_run(config, entry, tmp_path, config.data, config.domains())
        (tmp_path / "run.yaml").write_text(yaml.safe_dump(runs[entry["name"]]))
        load_train_config(tmp_path / "run.yaml")
    mixed = runs["clip_f050_n400000_s0"]
    assert [s["type"] for s in mixed["sources"]] == ["imagenet_captions", "webdataset"] and mixed["samples"] == 400000
    small, large = (runs[f"clip_f100_n{n}_s1"]["sources"][0] for n in (100000, 400000))
    assert small["subset_seed"] == large["subset_seed"] and (small["size"], large["size"]) == (100000, 400000)
    without = runs["clip_f100_n400000_no_imagenet-sketch_s0"]["sources"][0]
    assert "sketch" in without["exclude_captions"] and without["size"] == 400000
    settings["exposure"] = {"imagenet-sketch": {"exclude_files": "sketches.txt"}}
    path.write_text(yaml.safe_dump(settings))
    with pytest.raises(ValueError, match=r"exposure\.imagenet-sketch: exclude_files lists image files, and the "
                                         r"samples of the diverse webdataset shards are not files"):
        load_study_config(path)
