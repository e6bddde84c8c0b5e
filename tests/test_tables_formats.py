"""Result tables as people have them: CLIP_benchmark's built CSV, JSON lines (model-soups, WiSE-FT),
long tables with named columns, the alias table, notes for what is left out, binary files."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from clipshift.cli import main
from clipshift.robustness import (DATASET_ALIASES, TableFormatError, canonical_dataset, detect_format,
                                  effective_robustness, read_results)

BASE_X = [0.55, 0.65, 0.72, 0.80]  # baseline models exactly on logit(shift) = logit(id) + b
SHIFT_B = {"imagenet-v2": -0.5, "imagenet-sketch": -2.0, "imagenet-r": -1.5}


def write_baseline(path: Path) -> Path:
    """This project's long table: four baseline models on a slope-1 logit line per shift (no counts, so
    intervals are fit uncertainty only and collapse on an exact line)."""
    rows = ["model,dataset,metric,value,group"]
    for i, x in enumerate(BASE_X):
        rows.append(f"base{i},imagenet,top1,{x},baseline")
        rows += [f"base{i},{d},top1,{float(expit(logit(x) + b))!r},baseline" for d, b in SHIFT_B.items()]
    path.write_text("\n".join(rows) + "\n")
    return path


def hand_er(x: float, y: float, dataset: str) -> float:
    return y - float(expit(logit(x) + SHIFT_B[dataset]))


CLIP = {"imagenet": 0.6332, "imagenet-v2": 0.5595, "imagenet-sketch": 0.4224, "imagenet-r": 0.6925}


def write_clip_benchmark_csv(path: Path, percent: bool = False) -> Path:
    """`clip_benchmark build` output: long, robustness sets mixed with other benchmarks and retrieval."""
    names = {"imagenet": "imagenet1k", "imagenet-v2": "imagenetv2", "imagenet-sketch": "imagenet_sketch",
             "imagenet-r": "wds/imagenet-r"}
    header = "acc1,acc5,mean_per_class_recall,image_retrieval_recall@5,dataset,model,pretrained,task,model_fullname"
    rows = [header]
    scale = 100 if percent else 1
    for key, name in names.items():
        rows.append(f"{scale * CLIP[key]:.4f},0.9,0.6,,{name},ViT-B-32,openai,zeroshot_classification,ViT-B-32 openai")
    rows += ["0.59,0.9,0.6,,cars,ViT-B-32,openai,zeroshot_classification,ViT-B-32 openai",
             "0.88,0.99,0.88,,vtab/cifar10,ViT-B-32,openai,zeroshot_classification,ViT-B-32 openai",
             ",,,0.55,mscoco_captions,ViT-B-32,openai,zeroshot_retrieval,ViT-B-32 openai"]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_alias_table():
    for name in ("ImageNet", "imagenet1k", "ImageNet-1k", "IMAGENET 1K", "imagenet_1k", "wds/imagenet1k"):
        assert canonical_dataset(name) == "imagenet", name
    for name, canonical in (("ImageNetV2", "imagenet-v2"), ("imagenet_v2", "imagenet-v2"),
                            ("imagenetv2-matched-frequency", "imagenet-v2"), ("ImageNetSketch", "imagenet-sketch"),
                            ("imagenet_sketch", "imagenet-sketch"), ("ImageNetR", "imagenet-r"),
                            ("ImageNet-A", "imagenet-a"), ("ObjectNet", "objectnet"), ("ImageNetV2:top1", "imagenet-v2")):
        assert canonical_dataset(name) == canonical, name
    assert canonical_dataset("ImageNet2p") == "ImageNet2p" and canonical_dataset("cars") == "cars"
    assert canonical_dataset("sketch") == "sketch"  # the embedded world's set, not ImageNet-Sketch
    assert set(DATASET_ALIASES) == {"imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-r", "imagenet-a",
                                    "objectnet"}


@pytest.mark.parametrize("percent", [False, True])
def test_clip_benchmark_csv_read_and_er_by_hand(tmp_path, percent):
    path = write_clip_benchmark_csv(tmp_path / "benchmark.csv", percent=percent)
    assert detect_format(path) == "clip_benchmark_csv"
    frame = read_results(path)
    assert set(frame["model"]) == {"ViT-B-32/openai"}
    assert frame.set_index("dataset")["value"].to_dict() == pytest.approx(CLIP)
    notes = frame.attrs["notes"]
    assert any("1 row(s) of other tasks (zeroshot_retrieval)" in n for n in notes)
    assert any("left out 2 row(s) of 2 dataset(s) that are not ImageNet or its natural shifts: cars, vtab/cifar10"
               in n for n in notes)
    with pytest.warns(UserWarning) as warned:
        er = effective_robustness(path, write_baseline(tmp_path / "base.csv"), n_bootstrap=50)
    assert [str(w.message) for w in warned] == notes
    row = er[er.model == "ViT-B-32/openai"].set_index("dataset")
    for dataset in SHIFT_B:
        assert row.loc[dataset, "effective_robustness"] == pytest.approx(hand_er(CLIP["imagenet"], CLIP[dataset],
                                                                                 dataset), abs=1e-9)
    # average: OLS in logit space over the baseline's mean shift accuracies, by hand
    base_avg = [sum(float(expit(logit(x) + b)) for b in SHIFT_B.values()) / 3 for x in BASE_X]
    slope, intercept = np.polyfit(logit(BASE_X), logit(base_avg), 1)
    avg = sum(CLIP[d] for d in SHIFT_B) / 3
    assert row.loc["average", "effective_robustness"] == pytest.approx(
        avg - expit(slope * logit(CLIP["imagenet"]) + intercept), abs=1e-9)
    assert er.attrs["notes"] == notes


def test_clip_benchmark_csv_on_the_command_line(tmp_path, capsys):
    path = write_clip_benchmark_csv(tmp_path / "benchmark.csv")
    out = tmp_path / "er"
    code = main(["er", "--results", str(path), "--baseline", str(write_baseline(tmp_path / "base.csv")),
                 "--bootstrap", "50", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "note: " in printed and "cars, vtab/cifar10" in printed and "zeroshot_retrieval" in printed
    er = pd.read_csv(out / "er.csv").set_index(["model", "dataset"])
    got = er.loc[("ViT-B-32/openai", "imagenet-r"), "effective_robustness"]
    assert got == pytest.approx(hand_er(0.6332, 0.6925, "imagenet-r"), abs=1e-9)
    assert "ViT-B-32/openai" in printed and (out / "er_average.png").exists()


def write_soups(path: Path) -> Path:
    """model-soups' individual_model_results.jsonl: one object per model, a held-out split among the keys."""
    lines = [{"model_name": "model_0", "ImageNet2p": 0.80, "ImageNet": 0.79, "ImageNetV2": 0.68,
              "ImageNetSketch": 0.47, "ImageNetR": 0.62, "ObjectNet": 0.50, "ImageNetA": 0.33},
             {"model_name": "model_1", "ImageNet2p": 0.81, "ImageNet": 0.80, "ImageNetV2": 0.69,
              "ImageNetSketch": 0.45, "ImageNetR": 0.60, "ObjectNet": 0.51, "ImageNetA": 0.35}]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_json_lines_read_and_er_by_hand(tmp_path):
    path = write_soups(tmp_path / "individual_model_results.jsonl")
    assert detect_format(path) == "jsonl"
    frame = read_results(path)
    assert sorted(frame["model"].unique()) == ["model_0", "model_1"]
    assert sorted(frame["dataset"].unique()) == ["imagenet", "imagenet-a", "imagenet-r", "imagenet-sketch",
                                                 "imagenet-v2", "objectnet"]
    assert frame.attrs["notes"] == [f"{path}: left out 2 value(s) of 1 dataset(s) that are not ImageNet or its natural "
                                    f"shifts: ImageNet2p"]
    with pytest.warns(UserWarning, match="ImageNet2p"):
        er = effective_robustness(path, write_baseline(tmp_path / "base.csv"), n_bootstrap=50,
                                  shifts=list(SHIFT_B))
    row = er.set_index(["model", "dataset"])
    assert row.loc[("model_1", "imagenet-sketch"), "effective_robustness"] == pytest.approx(
        hand_er(0.80, 0.45, "imagenet-sketch"), abs=1e-9)
    # WiSE-FT's keys (`ImageNet:top1`) and a .json file holding one object are read the same way
    wise = tmp_path / "wise.json"
    wise.write_text(json.dumps({"alpha": 0.5, "ImageNet:top1": 79.0, "ImageNetV2:top1": 68.0, "ImageNet2p:top1": 80}))
    frame = read_results(wise)
    assert set(frame["model"]) == {"alpha=0.5"} and frame.set_index("dataset")["value"].to_dict() == {
        "imagenet": 0.79, "imagenet-v2": 0.68}


def test_json_lines_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model_name": "a", "ImageNet": 0.7}\nnot json\n')
    with pytest.raises(TableFormatError, match=r"bad.jsonl, line 2: not a JSON object"):
        read_results(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"model_name": "a", "ImageNet": 0.7}\n\n{"model_name": "a", "ImageNet": 0.71}\n')
    with pytest.raises(TableFormatError, match=r"dup.jsonl: duplicate model 'a' on lines 1, 3"):
        read_results(dup)
    none = tmp_path / "none.jsonl"
    none.write_text('{"model_name": "a", "ImageNet2p": 0.7}\n')
    with pytest.raises(TableFormatError, match=r"no key names ImageNet or a natural shift.*ImageNet2p"):
        read_results(none)


def write_scaling(path: Path) -> Path:
    """A scaling-law study's long table: the model is arch + name, other tasks in the same rows."""
    rows = ["arch,name,samples_seen,downstream_dataset,acc1,task"]
    for dataset, acc in (("imagenet1k", 63.3), ("imagenetv2", 55.9), ("imagenet_sketch", 42.2), ("cars", 80.0)):
        rows.append(f"ViT-B-32,laion400m,13B,{dataset},{acc},zeroshot_classification")
        rows.append(f"ViT-B-32,laion400m,13B,{dataset},{acc + 10},linear_probe")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_named_columns_on_the_command_line(tmp_path, capsys):
    path = write_scaling(tmp_path / "scaling.csv")
    base = write_baseline(tmp_path / "base.csv")
    assert main(["er", "--results", str(path), "--baseline", str(base), "--out", str(tmp_path / "x")]) == 2
    assert "unrecognised results table" in capsys.readouterr().err
    out = tmp_path / "er"
    code = main(["er", "--results", str(path), "--baseline", str(base), "--model-column", "arch,name",
                 "--dataset-column", "downstream_dataset", "--value-column", "acc1",
                 "--where", "task=zeroshot_classification", "--bootstrap", "50", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "cars" in printed
    er = pd.read_csv(out / "er.csv").set_index(["model", "dataset"])
    got = er.loc[("ViT-B-32/laion400m", "imagenet-sketch"), "effective_robustness"]
    assert got == pytest.approx(hand_er(0.633, 0.422, "imagenet-sketch"), abs=1e-9)  # percent read per column
    assert er.loc[("ViT-B-32/laion400m", "imagenet-v2"), ["arch", "name"]].tolist() == ["ViT-B-32", "laion400m"]
    # no ImageNet-R result: no imagenet-r row and no average over the three shifts
    assert set(er.xs("ViT-B-32/laion400m").index) == {"imagenet-v2", "imagenet-sketch"}


def test_named_columns_errors(tmp_path):
    path = write_scaling(tmp_path / "scaling.csv")
    with pytest.raises(TableFormatError, match=r"duplicate result .*model='ViT-B-32/laion400m', dataset='imagenet'.* "
                                               r"on lines 2, 3"):
        read_results(path, model_columns=["arch", "name"], dataset_column="downstream_dataset")
    with pytest.raises(TableFormatError, match=r"no column\(s\) \['model'\]; columns: \['arch'"):
        read_results(path, dataset_column="downstream_dataset", value_column="acc1")
    with pytest.raises(TableFormatError, match=r"--where: no column\(s\) \['tsk'\]"):
        read_results(path, model_columns="arch", dataset_column="downstream_dataset", where={"tsk": "x"})
    with pytest.raises(TableFormatError, match=r"no rows with task = 'zero'"):
        read_results(path, model_columns="arch", dataset_column="downstream_dataset", where={"task": "zero"})
    only_cars = tmp_path / "cars.csv"
    only_cars.write_text("model,dataset,acc1\na,cars,0.5\n")
    with pytest.raises(TableFormatError, match=r"no rows left on ImageNet.*cars"):
        read_results(only_cars, value_column="acc1")
    # a dataset named by the caller is kept (e.g. the embedded world's sets)
    world = tmp_path / "world.csv"
    world.write_text("model,dataset,acc1\na,test,0.5\na,v2,0.4\na,cars,0.3\n")
    frame = read_results(world, value_column="acc1", datasets=["test", "v2"])
    assert sorted(frame["dataset"]) == ["test", "v2"] and "cars" in frame.attrs["notes"][0]


@pytest.mark.parametrize("name,data", [("results.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))),
                                       ("results.json", b"PK\x03\x04\x14\x00\x00\x00"),
                                       ("results.tsv", bytes(range(128, 256)) * 40)])
def test_binary_results_file_is_a_one_line_error(tmp_path, capsys, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    assert main(["er", "--results", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path}: a binary file" in err and "expected" in err
