"""A rehearsal of the study on data as distributed: miniatures of ImageNet-Captions (narrow), a
YFCC-style caption table (diverse) and ImageNet val / V2 / Sketch / R / A / ObjectNet, a class
subset of four wnids, a tiny model; run locally, then through ``--plan`` line by line."""

from __future__ import annotations

import json
import shlex

import pandas as pd
import pytest
import yaml

from clipshift.cli import main
from clipshift.recipes.study import HYPOTHESES, TITLES, load_study_config, study_plan

from miniature_real import NAMES, WNIDS, write_caption_csv, write_data_root, write_imagenet_captions, write_wnid_file

SHIFTS = ["imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a", "objectnet"]


@pytest.fixture(scope="module")
def real_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    captions = write_imagenet_captions(root / "imagenet-captions", per_class=20)
    table = write_caption_csv(root / "yfcc", per_class=20)
    write_data_root(root / "eval")
    config = dict(
        data={"narrow": [{"type": "imagenet_captions", "json": str(captions["json"]), "root": str(captions["root"])}],
              "diverse": [{"type": "csv", "path": str(table["path"])}]},
        classes=str(write_wnid_file(root / "classes.txt", WNIDS)), eval_root=str(root / "eval"),
        id_dataset="imagenet", shifts=SHIFTS, templates="simple", architecture="clipshift-tiny-bow", image_size=32,
        train_size=40, sizes=[20, 40], mixture=[0.0, 1.0], seeds=[0], jobs=1, bootstrap=50, probe_images=64,
        contrastive=dict(epochs=3, batch_size=16), supervised=dict(epochs=3, batch_size=16),
        simclr=dict(epochs=3, batch_size=16), simclr_finetune=dict(epochs=2, batch_size=16),
        baselines=[dict(train_size=10, epochs=1), dict(train_size=20, epochs=2), dict(train_size=40, epochs=3)],
        reference=dict(train_size=20, epochs=1),
        exposure={"imagenet-sketch": {"exclude_captions": "holiday"}})  # a stand-in domain: the snapshot captions
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def local_run(real_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("study_real")
    assert main(["study", str(real_config), "--out", str(out), "--quiet"]) == 0
    return out


def test_the_study_runs_on_real_layouts_end_to_end(local_run):
    verdicts = json.loads((local_run / "verdicts.json").read_text())
    assert [v["hypothesis"] for v in verdicts] == list(HYPOTHESES)
    report = (local_run / "report.md").read_text()
    for v in verdicts:
        assert f"**Verdict:** {v['verdict']}" in report and f"## {TITLES[v['hypothesis']]}" in report
        assert (local_run / "figures" / f"study_{v['hypothesis']}.png").stat().st_size > 20_000
    assert (local_run / "report.html").is_file()
    results = pd.read_csv(local_run / "results.csv")
    assert set(results["dataset"]) == {"imagenet", *SHIFTS}
    # every configuration × seed is a `clipshift train` run in its own folder, with its data summary
    run = yaml.safe_load((local_run / "runs" / "clip_f100_n40_s0" / "config.yaml").read_text())
    assert run["classes"].endswith("classes.txt") and run["data"]["images"] == 40
    sup = yaml.safe_load((local_run / "runs" / "sup_narrow_true_n40_s0" / "config.yaml").read_text())
    assert sup["labels"] == "source"
    # the class subset: four classes compete on every suite (chance 25%), ObjectNet keeps its mapped ones
    ident = results[(results["dataset"] == "imagenet") & (results["config"] == "baseline")]
    assert (ident["num_examples"] == 4 * 4).all()  # val has 4 images per class of the subset


def test_text_matching_uses_wordnet_synonyms_and_reports_precision(local_run):
    facts = json.loads((local_run / "facts.json").read_text())
    narrow = facts["text_match"]["narrow"]
    # miniature captions: 5 of 8 kinds name one class (by name or WordNet lemma); one of those is wrong
    assert narrow["match_rate"] == pytest.approx(5 / 8, abs=0.1)
    assert narrow["precision"] == pytest.approx(4 / 5, abs=0.1)
    assert "precision" in (local_run / "report.md").read_text()


def test_plan_writes_commands_that_reproduce_the_local_run(real_config, local_run, tmp_path, monkeypatch):
    out = tmp_path / "planned"
    assert main(["study", str(real_config), "--out", str(out), "--plan", "--quiet"]) == 0
    lines = [line for line in (out / "plan.sh").read_text().splitlines() if line and not line.startswith(("#", "set"))]
    train = [line for line in lines if " train " in line]
    evaluate = [line for line in lines if "--evaluate" in line]
    assert len(train) == len(list((out / "runs").iterdir())) and not (out / "results.csv").exists()
    assert all(line.startswith("clipshift ") for line in lines)
    probed = {e["name"] for e in study_plan(load_study_config(real_config)) if "probe" in e["heads"]}

    def refuse(*args, **kwargs):
        pytest.fail("an --evaluate line checked the training sources or read the probe's images without a probe")

    for line in lines[:-1]:  # each a plain command: run them one by one, as a scheduler would
        with monkeypatch.context() as patch:
            if "--evaluate" in line:  # it reads its model and the evaluation sets (and a probe's images) only
                patch.setattr("clipshift.recipes.study.run.check_sources", refuse)
                if shlex.split(line)[-1] not in probed:
                    patch.setattr("clipshift.recipes.study.data.probe_suite", refuse)
            assert main(shlex.split(line)[1:] + ["--quiet"]) == 0, line
    assert all((out / "runs" / shlex.split(e)[-1] / "eval.csv").is_file() for e in evaluate)
    assert main(shlex.split(lines[-1])[1:] + ["--quiet"]) == 0
    facts = json.loads((out / "facts.json").read_text())
    assert facts["models_trained_this_run"] == 0  # the planned commands trained everything
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), pd.read_csv(local_run / "summary.csv"))


def test_torchrun_plan_and_missing_data_errors(real_config, tmp_path, capsys):
    out = tmp_path / "torchrun"
    assert main(["study", str(real_config), "--out", str(out), "--plan", "--torchrun", "2", "--quiet"]) == 0
    assert "torchrun --standalone --nproc_per_node 2 -m clipshift train" in (out / "plan.sh").read_text()
    settings = yaml.safe_load(real_config.read_text())
    settings["data"]["diverse"][0]["path"] = str(tmp_path / "missing.tsv")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(settings))
    assert main(["study", str(bad), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    assert "missing.tsv" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "runs").exists() or not any((tmp_path / "bad" / "runs").glob("*/model"))
    assert NAMES  # the classes of the miniature


def test_the_imagenet_config_plans_every_run(tmp_path):
    from pathlib import Path

    from clipshift.recipes.study import load_study_config, study_plan, train_run
    from clipshift.recipes.common.training import load_train_config

    config = load_study_config(Path(__file__).parents[1] / "configs" / "fang2022-imagenet.yaml")
    plan = study_plan(config)
    # sizes 100k, 200k, 400k (diverse) + mixtures 0, 0.5 + two supervised + SimCLR pre-training and fine-tune
    # + CLIP diverse without the sketch domain and without the rendition one
    assert len(plan) == len(config.baselines) + 3 * 11
    domains = {s: d["exclude_captions"] for s, d in config.domains().items()}
    assert set(domains) == {"imagenet-sketch", "imagenet-r"} and "sketch" in domains["imagenet-sketch"]
    for entry in plan:  # each a valid `clipshift train` configuration
        settings = train_run(config, entry, tmp_path, config.data, config.domains())
        path = tmp_path / f"{entry['name']}.yaml"
        path.write_text(yaml.safe_dump(settings))
        run = load_train_config(path)
        assert run.architecture == "RN50" and run.image_size == 224 and run.classes == "imagenet"
    sizes = {e["name"]: sum(s["size"] for s in train_run(config, e, tmp_path, config.data, config.domains())["sources"])
             for e in plan}
    assert sizes["clip_f100_n400000_no_imagenet-r_s1"] == 400000
    assert sizes["clip_f100_n100000_s0"] == 100000 and sizes["clip_f050_n400000_s2"] == 400000


def test_eval_sets_as_clipshift_finetune_takes_them(real_config):
    from clipshift.recipes.study import load_study_config
    from clipshift.recipes.study.data import open_eval_suite
    from clipshift.recipes.common.training import class_names_for

    root = yaml.safe_load(real_config.read_text())["eval_root"]
    config = load_study_config(real_config, {"eval_sets": ["imagenet", "imagenet-r", "objectnet"],
                                             "id_dataset": "nothing", "shifts": ["imagenet-v2"],
                                             "exposure": {"imagenet-r": {"exclude_captions": "holiday"}}})
    assert config.domains() == {"imagenet-r": {"exclude_captions": "holiday"}}  # imagenet-sketch is not studied
    assert (config.id_dataset, config.shifts) == ("imagenet", ["imagenet-r", "objectnet"])
    names = class_names_for(config.classes)
    suite = open_eval_suite("imagenet-r", config, names)
    assert suite.num_classes == 4 and len(suite) > 0  # the subset's label space
    mapped = load_study_config(real_config, {"eval_sets": {"imagenet": f"{root}/imagenet/val",
                                                           "imagenet-r": f"{root}/imagenet-r"},
                                             "exposure": {"imagenet-r": {"exclude_captions": "holiday"}}})
    assert mapped.shifts == ["imagenet-r"] and len(open_eval_suite("imagenet", mapped, names)) == 16


def test_exposure_removes_the_named_domain_from_real_sources(real_config, local_run):
    table = yaml.safe_load(real_config.read_text())["data"]["diverse"][0]["path"]
    named = sum("holiday" in line.lower() for line in open(table).read().splitlines()[1:])
    runs = {n: yaml.safe_load((local_run / "runs" / f"{n}_s0" / "config.yaml").read_text())["data"]
            for n in ("clip_f100_n40", "clip_f100_n40_no_imagenet-sketch")}
    full, without = (runs[n]["sources"][0] for n in runs)
    assert named > 0 and without["rows"] == full["rows"] - named  # the snapshot captions are gone
    assert without["kept"] == full["kept"] == 40  # at the same size
    verdict = next(v for v in json.loads((local_run / "verdicts.json").read_text()) if v["hypothesis"] == "exposure")
    assert "on `imagenet-sketch` ER" in verdict["verdict"] and verdict["agreement"] in ("agrees", "differs")
