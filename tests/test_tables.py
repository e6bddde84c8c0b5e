"""Results-table readers (long, open_clip, timm, CLIP_benchmark), the one-call API and `clipshift er`."""

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from scipy.special import expit, logit

from clipshift.cli import main
from clipshift.robustness import (TableFormatError, canonical_dataset, detect_format, effective_robustness,
                                  read_results)
from clipshift.robustness.tables import imagenet1k_only

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BASE_X = [0.55, 0.65, 0.72, 0.80]  # baseline models on logit(shift) = logit(id) + b
SHIFT_B = {"imagenet-v2": -0.5, "imagenet-sketch": -2.0, "imagenet-r": -1.5}
TIMM_FILES = {"imagenet": "results-imagenet.csv", "imagenet-v2": "results-imagenetv2-matched-frequency.csv",
              "imagenet-sketch": "results-sketch.csv", "imagenet-r": "results-imagenet-r.csv"}


def _acc(x, dataset):
    return x if dataset == "imagenet" else float(expit(logit(x) + SHIFT_B[dataset]))


def write_timm_folder(root: Path) -> Path:
    """timm's layout: one results-<dataset>.csv per dataset, top1 in percent; resnet50.a1_in1k at two sizes."""
    root.mkdir(parents=True, exist_ok=True)
    models = [("resnet50.a1_in1k", 224, BASE_X[0]), ("resnet50.a1_in1k", 288, BASE_X[1]),
              ("vit_small_patch16_224.augreg_in1k", 224, BASE_X[2]), ("convnext_tiny.fb_in1k", 224, BASE_X[3]),
              ("convnext_tiny.fb_in22k_ft_in1k", 224, 0.82)]
    for dataset, name in TIMM_FILES.items():
        rows = ["model,img_size,top1,top1_err,top5,top5_err,param_count,crop_pct,interpolation"]
        for model, size, x in models:
            acc = _acc(x, dataset) + (0.05 if "in22k" in model and dataset != "imagenet" else 0)
            rows.append(f"{model},{size},{100 * acc:.4f},{100 - 100 * acc:.4f},99.0,1.0,25.6,0.95,bicubic")
        (root / name).write_text("\n".join(rows) + "\n")
    return root


def write_openclip_table(path: Path, extra_rows: str = "") -> Path:
    """open_clip's layout: one row per name,pretrained, fractions, dataset columns among others."""
    header = "name,pretrained,params (M),ImageNet 1k,Cars,ImageNet Sketch,ImageNet v2,ImageNet-R,ObjectNet"
    rows = [header,
            "ViT-B-32,openai,151.28,0.6332,0.59,0.4224,0.5595,0.6925,0.4431",
            "RN50,yfcc15m,102.01,0.3161,0.02,0.0900,0.2700,0.2100,0.2100"]
    path.write_text("\n".join(rows) + "\n" + extra_rows)
    return path


# --- readers ---------------------------------------------------------------------------------------------------

def test_canonical_dataset_ids():
    assert canonical_dataset("ImageNet 1k") == "imagenet"
    assert canonical_dataset("ImageNet v2") == "imagenet-v2"
    assert canonical_dataset("imagenet_sketch") == "imagenet-sketch"
    assert canonical_dataset("ImageNet-R") == "imagenet-r" and canonical_dataset("imagenet-a") == "imagenet-a"
    assert canonical_dataset("imagenet1k") == "imagenet" and canonical_dataset("imagenetv2") == "imagenet-v2"
    assert canonical_dataset("ObjectNet") == "objectnet"
    # the embedded world's ids stay as written (bare "sketch" is the world's, not ImageNet-Sketch)
    assert [canonical_dataset(d) for d in ("test", "v2", "sketch", "rendition")] == ["test", "v2", "sketch",
                                                                                      "rendition"]


def test_openclip_reader(tmp_path):
    frame = read_results(write_openclip_table(tmp_path / "openclip_results.csv"))
    assert detect_format(tmp_path / "openclip_results.csv") == "openclip"
    assert sorted(frame["dataset"].unique()) == ["imagenet", "imagenet-r", "imagenet-sketch", "imagenet-v2",
                                                 "objectnet"]  # "Cars" is not an ImageNet column
    row = frame.set_index(["model", "dataset"])
    assert row.loc[("ViT-B-32/openai", "imagenet-v2"), "value"] == pytest.approx(0.5595)
    assert row.loc[("ViT-B-32/openai", "imagenet"), "num_examples"] == 50_000
    assert row.loc[("RN50/yfcc15m", "objectnet"), "params_m"] == pytest.approx(102.01)
    assert (frame["metric"] == "top1").all() and (frame["group"] == "open_clip").all()


def test_openclip_reader_errors(tmp_path):
    dup = write_openclip_table(tmp_path / "dup.csv", "ViT-B-32,openai,151.28,0.6,0.5,0.4,0.5,0.6,0.4\n")
    with pytest.raises(TableFormatError, match=r"dup.csv: duplicate model \(name='ViT-B-32', pretrained='openai'\) "
                                               r"on lines 2, 4"):
        read_results(dup)
    bad = write_openclip_table(tmp_path / "bad.csv", "X,y,1,0.5,0.5,abc,0.5,0.5,0.5\n")
    with pytest.raises(TableFormatError, match=r"bad.csv, line 4, column 'ImageNet Sketch': 'abc' is not a number"):
        read_results(bad)
    percent = tmp_path / "percent.csv"
    percent.write_text("name,pretrained,ImageNet 1k,ImageNet v2\nA,x,63.3,55.9\nB,y,101.5,60.0\n")
    with pytest.raises(TableFormatError, match=r"percent.csv, line 3, column 'ImageNet 1k': '101.5' is not an "
                                               r"accuracy \(percent above 100"):
        read_results(percent)
    negative = tmp_path / "negative.csv"
    negative.write_text("name,pretrained,ImageNet 1k\nA,x,-0.2\n")
    with pytest.raises(TableFormatError, match=r"line 2, column 'ImageNet 1k': '-0.2' is not an accuracy "
                                               r"\(negative accuracy"):
        read_results(negative)
    none = tmp_path / "none.csv"
    none.write_text("name,pretrained,Cars\nA,x,0.2\n")
    with pytest.raises(TableFormatError, match=r"none of the ImageNet columns"):
        read_results(none)


def test_percent_is_detected_per_column(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("name,pretrained,ImageNet 1k,ImageNet v2\nA,x,63.3,0.559\nB,y,70.0,0.62\n")
    row = read_results(path).set_index(["model", "dataset"])["value"]
    assert row[("A/x", "imagenet")] == pytest.approx(0.633) and row[("A/x", "imagenet-v2")] == pytest.approx(0.559)
    assert row[("B/y", "imagenet")] == 0.7  # exact: 70.0 / 100 with no float residue


def test_timm_folder_reader(tmp_path):
    root = write_timm_folder(tmp_path / "timm")
    assert detect_format(root) == "timm"
    frame = read_results(root)
    models = sorted(frame["model"].unique())
    # the model timm lists at two image sizes gets both sizes in its id; the others keep their name
    assert models == ["convnext_tiny.fb_in1k", "convnext_tiny.fb_in22k_ft_in1k", "resnet50.a1_in1k@224",
                      "resnet50.a1_in1k@288", "vit_small_patch16_224.augreg_in1k"]
    row = frame.set_index(["model", "dataset"])
    assert row.loc[("resnet50.a1_in1k@288", "imagenet"), "value"] == pytest.approx(0.65)
    assert row.loc[("convnext_tiny.fb_in1k", "imagenet-sketch"), "value"] == pytest.approx(_acc(0.80, "imagenet-sketch"),
                                                                                           abs=1e-6)
    assert set(frame["dataset"]) == set(TIMM_FILES)
    one = read_results(root / "results-sketch.csv")  # a single file works too
    assert set(one["dataset"]) == {"imagenet-sketch"} and len(one) == 5


def test_timm_reader_errors(tmp_path):
    root = write_timm_folder(tmp_path / "timm")
    path = root / "results-imagenet-r.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(TableFormatError, match=r"results-imagenet-r.csv: duplicate model \(model='resnet50.a1_in1k', "
                                               r"img_size='224'\) on lines 2, 7"):
        read_results(root)
    lines[3] = lines[3].replace(lines[3].split(",")[2], "134.5")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TableFormatError, match=r"results-imagenet-r.csv, line 4, column 'top1': '134.5' is not an "
                                               r"accuracy \(percent above 100"):
        read_results(root)
    path.write_text("model,img_size,top5\nresnet50,224,90\n")
    with pytest.raises(TableFormatError, match=r"results-imagenet-r.csv: not a timm results file, missing column\(s\) "
                                               r"\['top1'\]"):
        read_results(root)


def test_clip_benchmark_reader(tmp_path):
    root = tmp_path / "cb"
    root.mkdir()
    records = [("imagenet1k", 0.6332), ("imagenetv2", 0.5595), ("imagenet_sketch", 0.4224), ("wds/imagenet-r", 0.69)]
    for dataset, acc in records:
        (root / f"{dataset.replace('/', '_')}.json").write_text(json.dumps(
            {"dataset": dataset, "model": "ViT-B-32", "pretrained": "openai", "task": "zeroshot_classification",
             "metrics": {"acc1": acc, "acc5": 0.9, "mean_per_class_recall": acc}, "language": "en"}))
    (root / "retrieval.json").write_text(json.dumps({"dataset": "mscoco_captions", "model": "ViT-B-32",
                                                     "pretrained": "openai", "task": "zeroshot_retrieval",
                                                     "metrics": {"image_retrieval_recall@5": 0.5}}))
    assert detect_format(root) == "clip_benchmark"
    frame = read_results(root)
    assert frame.set_index("dataset")["value"].to_dict() == {"imagenet": 0.6332, "imagenet-v2": 0.5595,
                                                             "imagenet-sketch": 0.4224, "imagenet-r": 0.69}
    assert set(frame["model"]) == {"ViT-B-32/openai"}
    (root / "again.json").write_text((root / "imagenet1k.json").read_text())
    with pytest.raises(TableFormatError, match=r"duplicate result for model 'ViT-B-32/openai' on 'imagenet'"):
        read_results(root)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": "imagenet1k", "model": "RN50", "metrics": {"acc1": 0.5}}))
    with pytest.raises(TableFormatError, match=r"bad.json: not a CLIP_benchmark result, missing key\(s\) "
                                               r"\['pretrained'\]"):
        read_results(bad)


def test_long_table_reader_and_unknown_formats(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("model,dataset,metric,value,num_examples,group\n"
                    "a,ImageNet v2,top1,55.0,10000,baseline\n"
                    "a,imagenet,top1,70.0,50000,baseline\n"
                    "a,imagenet,top5,90.0,50000,baseline\n")
    frame = read_results(path)
    assert detect_format(path) == "long"
    assert frame.set_index(["dataset", "metric"])["value"].to_dict() == {("imagenet-v2", "top1"): 0.55,
                                                                        ("imagenet", "top1"): 0.70,
                                                                        ("imagenet", "top5"): 90.0}
    dup = tmp_path / "dup.csv"
    dup.write_text(path.read_text() + "a,imagenet,top1,71.0,50000,baseline\n")
    with pytest.raises(TableFormatError, match=r"duplicate result \(model='a', dataset='imagenet', metric='top1'\) "
                                               r"on lines 3, 5"):
        read_results(dup)
    other = tmp_path / "other.csv"
    other.write_text("foo,bar\n1,2\n")
    with pytest.raises(TableFormatError, match=r"unrecognised results table with columns \['foo', 'bar'\]. "
                                               r"Known formats: long"):
        read_results(other)
    with pytest.raises(FileNotFoundError, match=r"results table not found"):
        read_results(tmp_path / "missing.csv")


def test_imagenet1k_only_selector():
    assert imagenet1k_only("resnet50.a1_in1k") and imagenet1k_only("resnet50.a1_in1k@288")
    assert imagenet1k_only("deit_small_patch16_224.fb_in1k") and imagenet1k_only("convnextv2_tiny.fcmae_ft_in1k")
    for name in ("convnext_base.fb_in22k_ft_in1k", "vit_base_patch16_clip_224.openai_ft_in1k",
                 "resnet50.fb_swsl_ig1b_ft_in1k", "tf_efficientnet_b0.ns_jft_in1k", "beit_base_patch16_224.in22k",
                 "resnet50", "vit_base_patch16_224.augreg2_in21k_ft_in1k", "eva02_base_patch14_448.mim_in22k_ft_in1k",
                 "regnety_1280.swag_lc_in1k", "regnety_320.seer_ft_in1k", "hrnet_w18_ssld.paddle_in1k"):
        assert not imagenet1k_only(name), name


# --- one call: effective_robustness ----------------------------------------------------------------------------

def test_effective_robustness_across_formats_by_hand(tmp_path):
    timm = write_timm_folder(tmp_path / "timm")
    openclip = write_openclip_table(tmp_path / "openclip_results.csv")
    with pytest.warns(UserWarning, match=r"shifts \['objectnet'\] skipped"):
        er, fits = effective_robustness(openclip, timm, baseline_filter=imagenet1k_only, return_fits=True)
    f = fits.set_index("dataset")
    assert list(f.index) == ["imagenet-v2", "imagenet-sketch", "imagenet-r", "average"]
    for dataset, b in SHIFT_B.items():  # baseline exactly on a slope-1 logit line (timm values rounded to 1e-6)
        assert f.loc[dataset, ["slope", "intercept"]].tolist() == pytest.approx([1.0, b], abs=1e-4)
        assert f.loc[dataset, "num_models"] == 4
    row = er.set_index(["model", "dataset"])
    for dataset, y in (("imagenet-v2", 0.5595), ("imagenet-sketch", 0.4224), ("imagenet-r", 0.6925)):
        expected = y - expit(logit(0.6332) + SHIFT_B[dataset])
        got = row.loc[("ViT-B-32/openai", dataset)]
        assert got["effective_robustness"] == pytest.approx(expected, abs=1e-4)
        assert got["ci_low"] < got["effective_robustness"] < got["ci_high"]
    assert row.loc[("ViT-B-32/openai", "imagenet-r"), "effective_robustness"] > 0.3
    # the in22k model from the baseline table is a model in its own right, marked as left out
    left_out = row.loc[("convnext_tiny.fb_in22k_ft_in1k", "imagenet-v2")]
    assert not left_out["is_baseline"] and left_out["group"] == "timm (not in baseline)"
    assert left_out["effective_robustness"] == pytest.approx(0.05, abs=1e-4)
    assert er.attrs["skipped_shifts"] == ["objectnet"]


def test_effective_robustness_probit_and_named_shifts(tmp_path):
    timm = write_timm_folder(tmp_path / "timm")
    er = effective_robustness(timm, baseline_filter=imagenet1k_only, baseline=timm, shifts=["imagenet-v2"],
                              transform="probit")
    base = er[er.is_baseline & (er.dataset == "imagenet-v2")]
    assert len(base) == 4 and abs(base["effective_robustness"]).max() > 1e-4  # a logit line is not a probit line
    assert set(er["dataset"]) == {"imagenet-v2", "average"}


def test_effective_robustness_errors(tmp_path):
    timm = write_timm_folder(tmp_path / "timm")
    with pytest.raises(ValueError, match=r"no baseline models: give a baseline table, or mark baseline rows .* \(none of the 5 models in the results is marked\)"):
        effective_robustness(timm)
    with pytest.raises(ValueError, match=r"no baseline models: found 5 models in the baseline table, 0 matching "
                                         r"'nothing'"):
        effective_robustness(timm, timm, baseline_filter="nothing")
    with pytest.raises(ValueError, match=r"id_dataset 'test' not in results"):
        effective_robustness(timm, timm, id_dataset="test", shifts=["imagenet-v2"])


@pytest.mark.skipif(not (SHARED_DATA / "openclip_results.csv").exists(), reason="shared published tables absent")
def test_published_openclip_against_timm_in1k_baseline(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        er, fits = effective_robustness(SHARED_DATA / "openclip_results.csv", SHARED_DATA / "timm_results",
                                        baseline_filter=imagenet1k_only, return_fits=True, n_bootstrap=200)
    f = fits.set_index("dataset")
    assert f.loc["imagenet-v2", "r2"] > 0.95 and f.loc["imagenet-v2", "num_models"] > 1000
    avg = er[er.dataset == "average"].set_index("model")["effective_robustness"]
    # Radford et al. / Taori et al.: zero-shot CLIP sits far above the ImageNet line, fine-tuning gives it up
    assert avg["ViT-L-14/openai"] > 0.3 and avg["ViT-B-32/openai"] > 0.2
    assert avg["vit_base_patch16_clip_224.openai_ft_in1k"] < avg["ViT-B-16/openai"] - 0.15
    assert abs(er[er.is_baseline & (er.dataset == "average")]["effective_robustness"].median()) < 0.02


# --- clipshift er ----------------------------------------------------------------------------------------------

def test_cli_er_contract(tmp_path, capsys):
    timm = write_timm_folder(tmp_path / "timm")
    openclip = write_openclip_table(tmp_path / "openclip_results.csv")
    out = tmp_path / "er"
    code = main(["er", "--results", str(openclip), "--baseline", str(timm), "--baseline-filter", "in1k-only",
                 "--shifts", "imagenet-v2,imagenet-r", "--out", str(out), "--bootstrap", "200"])
    assert code == 0
    er = pd.read_csv(out / "er.csv")
    assert er.columns[:8].tolist() == ["model", "dataset", "id_dataset", "id_accuracy", "shift_accuracy",
                                       "baseline_accuracy", "effective_robustness", "ci_low"]
    assert {"ci_high", "is_baseline", "group"} <= set(er.columns)
    assert set(er["dataset"]) == {"imagenet-v2", "imagenet-r", "average"}
    assert er[["id_accuracy", "shift_accuracy", "baseline_accuracy"]].stack().between(0, 1).all()
    fits = pd.read_csv(out / "fits.csv")
    assert {"dataset", "transform", "slope", "intercept", "r2", "num_models"} <= set(fits.columns)
    for name in ("er_average.png", "er_imagenet-v2.png", "er_imagenet-r.png"):
        with Image.open(out / name) as image:
            assert image.size == (960, 840)
    printed = capsys.readouterr().out
    assert "clipped to [0.0001, 1 - 0.0001]" in printed and "ViT-B-32/openai" in printed


def test_cli_er_errors(tmp_path, capsys):
    timm = write_timm_folder(tmp_path / "timm")
    assert main(["er", "--results", str(timm), "--out", str(tmp_path / "o")]) == 2
    assert "no baseline models" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("foo,bar\n1,2\n")
    assert main(["er", "--results", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "unrecognised results table" in capsys.readouterr().err
    assert main(["er", "--results", str(timm), "--baseline", str(timm), "--id-for", "oops",
                 "--out", str(tmp_path / "o")]) == 2
    assert "expected SHIFT=DATASET" in capsys.readouterr().err
