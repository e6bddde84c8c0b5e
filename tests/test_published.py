"""The published tables shipped with the package (issue 25, part 1): found in the installed package, small,
exactly the upstream files; `clipshift er --baseline published` and `--compare NAME` offline; long tables
read as written; one-line errors for input that cannot meet the baseline."""

import csv
import fnmatch
import gzip
import hashlib
import json
import tomllib
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clipshift.cli import main
from clipshift.robustness import detect_format, effective_robustness, read_results
from clipshift.robustness.published import (openclip_training_data, published_baseline, published_models,
                                            timm_training_data)
from clipshift.robustness.tables import imagenet1k_only

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATA_BUDGET = 300_000  # bytes: the shipped tables, compressed (220,911 when first shipped)
TIMM_FILES = {"imagenet-v2": "results-imagenetv2-matched-frequency", "imagenet-sketch": "results-sketch",
              "imagenet-r": "results-imagenet-r", "imagenet-a": "results-imagenet-a"}
MINE = {"my-clip": {"imagenet": 68.3, "imagenet-v2": 60.1, "imagenet-sketch": 46.0, "imagenet-r": 75.2,
                    "imagenet-a": 30.5},
        "my-resnet": {"imagenet": 76.1, "imagenet-v2": 63.9, "imagenet-sketch": 24.1, "imagenet-r": 36.2,
                      "imagenet-a": 0.5}}


def shipped() -> Path:
    return Path(str(resources.files("clipshift.robustness").joinpath("published_tables")))


def write_mine(path: Path, models=MINE, header="model,dataset,top1") -> Path:
    rows = [header] + [f"{m},{d},{v}" for m, accs in models.items() for d, v in accs.items()]
    path.write_text("\n".join(rows) + "\n")
    return path


def in1k_only_keys(stem: str) -> set:
    """(model, img_size) of the in1k-only rows of one shipped timm file, read with csv and gzip alone."""
    with gzip.open(shipped() / "timm_results" / f"{stem}.csv.gz", "rt", encoding="utf-8") as f:
        return {(r["model"], r["img_size"]) for r in csv.DictReader(f) if imagenet1k_only(r["model"])}


def test_shipped_tables_are_installed_small_and_exactly_the_upstream_files():
    manifest = json.loads((shipped() / "manifest.json").read_text())
    files = {name: f for entry in manifest["tables"].values() for name, f in entry["files"].items()}
    assert len(files) == 6 and set(manifest["tables"]) == {"timm", "open_clip"}
    assert {e["licence"] for e in manifest["tables"].values()} == {"Apache-2.0", "MIT"}
    total = 0
    for name, record in files.items():
        packed = (shipped() / name).read_bytes()
        total += len(packed)
        data = gzip.decompress(packed)
        assert hashlib.sha256(data).hexdigest() == record["source_sha256"]
        assert data.decode().count("\n") - 1 == record["rows"]
        upstream = SHARED_DATA / ("timm_results" if "/" in name else "") / Path(name).name.removesuffix(".gz")
        if upstream.exists():  # the reference copies the package was made from
            assert upstream.read_bytes() == data
    assert total <= DATA_BUDGET and total == sum(f["bytes"] for f in files.values())
    readme = (shipped() / "README.md").read_text()
    assert "Apache-2.0" in readme and "MIT" in readme and f"{total:,} bytes" in readme


def test_package_data_ships_every_published_file():
    """pyproject's package-data globs take every file of the folder into the wheel (1.0 MB with them and the explorer's plotly.js)."""
    root = Path(__file__).resolve().parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["clipshift"]
    package = root / "src" / "clipshift"
    files = [p.relative_to(package).as_posix() for p in (package / "robustness" / "published_tables").rglob("*")
             if p.is_file()]
    assert len(files) == 8 and all(any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)
                                   for f in files)


def test_training_data_from_the_pretrained_tags():
    assert timm_training_data("resnet50.a1_in1k@288") == "ImageNet-1k"
    assert timm_training_data("convnext_base.fb_in22k_ft_in1k") == "ImageNet-22k → ImageNet-1k"
    assert timm_training_data("vit_huge_patch14_clip_336.laion2b_ft_in12k_in1k") == \
        "LAION-2B → ImageNet-12k → ImageNet-1k"
    assert timm_training_data("hgnetv2_b6.ssld_stage2_ft_in1k") == "ssld → ImageNet-1k"
    assert timm_training_data("regnety_1280.swag_lc_in1k") == "Instagram-3.6B (SWAG) → ImageNet-1k"
    assert timm_training_data("hrnet_w18_ssld.paddle_in1k") == "ssld → ImageNet-1k"
    assert timm_training_data("resnet50") is None
    assert openclip_training_data("laion2b_s34b_b79k") == "LAION-2B"
    assert openclip_training_data("openai") == "OpenAI WIT-400M"
    assert openclip_training_data("commonpool_m_clip_s128m_b4k") == "CommonPool-M (clip filter)"
    assert openclip_training_data("datacomp_s_s13m_b4k") == "DataComp-S"
    assert openclip_training_data("v1") is None


def test_published_baseline_and_reference_names():
    base = published_baseline()
    assert base["model"].nunique() == 1218 and base["model"].map(imagenet1k_only).all()
    assert (base["training_data"] == "ImageNet-1k").all() and base["source"].str.startswith("timm results (").all()
    everything = published_models("published")
    assert everything.groupby("group")["model"].nunique().to_dict() == {"open_clip": 121, "timm": 1557}
    openclip = published_models("openclip")
    row = openclip[(openclip["model"] == "ViT-B-32/laion2b_s34b_b79k") & (openclip["dataset"] == "imagenet")]
    assert row["training_data"].tolist() == ["LAION-2B"] and row["pretrained"].tolist() == ["laion2b_s34b_b79k"]
    with pytest.raises(ValueError, match=r"^--compare: unknown table 'imagenet'; expected one of published, openclip, "
                                         r"timm"):
        published_models("imagenet")


def _er(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["er", "--results", str(write_mine(tmp_path / "mine.csv")), "--baseline", "published",
                 "--bootstrap", "100", "--out", str(out), *extra])
    assert code == 0
    return pd.read_csv(out / "er.csv"), pd.read_csv(out / "fits.csv"), out


def test_er_against_the_published_baseline_offline(tmp_path, capsys):
    er, fits, out = _er(tmp_path, "er")
    keys = in1k_only_keys("results-imagenet")
    expected = {shift: len(keys & in1k_only_keys(stem)) for shift, stem in TIMM_FILES.items()}
    assert expected["imagenet-v2"] == 1218 and expected["imagenet-a"] == 1217
    assert fits.set_index("dataset")["num_models"].to_dict() == {**expected, "average": 1217}
    mine = er[er["role"] == "user"].set_index(["model", "dataset"])
    assert len(mine) == 10 and set(er["role"]) == {"baseline", "user"}
    assert np.isfinite(mine[["effective_robustness", "ci_low", "ci_high"]].to_numpy()).all()
    assert (mine["ci_low"] < mine["effective_robustness"]).all() and (mine["effective_robustness"] < mine["ci_high"]).all()
    assert mine.loc[("my-clip", "average"), "shift_accuracy"] == pytest.approx((60.1 + 46.0 + 75.2 + 30.5) / 400)
    assert mine.loc[("my-clip", "average"), "effective_robustness"] > 0.25 > 0 > \
        mine.loc[("my-resnet", "average"), "effective_robustness"]
    assert {"source", "training_data", "pretrained", "model"} <= set(er.columns)
    assert sorted(p.name for p in out.glob("*.png")) == ["er_average.png", "er_imagenet-a.png", "er_imagenet-r.png",
                                                         "er_imagenet-sketch.png", "er_imagenet-v2.png"]
    assert "baseline: 1218 models" in capsys.readouterr().out


def test_compare_published_adds_references_outside_the_fit(tmp_path, capsys):
    er, fits, _ = _er(tmp_path, "er")
    with_refs, fits_refs, out = _er(tmp_path, "er-ref", "--compare", "published")
    pd.testing.assert_frame_equal(fits, fits_refs)  # the fit does not move
    assert (out / "fits.csv").read_text() == (tmp_path / "er" / "fits.csv").read_text()
    ours = with_refs[with_refs["role"] != "reference"].reset_index(drop=True)
    pd.testing.assert_frame_equal(ours[er.columns], er)  # nor does any other row, intervals included
    refs = with_refs[with_refs["role"] == "reference"]
    assert not refs["is_baseline"].any() and refs.loc[refs["dataset"] == "average", "model"].nunique() == 459
    assert set(refs["group"]) == {"open_clip", "timm"} and not set(refs["model"]) & set(er["model"])
    vit = refs[(refs["model"] == "ViT-L-14/openai") & (refs["dataset"] == "average")].iloc[0]
    assert vit["training_data"] == "OpenAI WIT-400M" and vit["source"].startswith("open_clip results (")
    assert vit["ci_low"] < vit["effective_robustness"] < vit["ci_high"] and vit["effective_robustness"] > 0.35
    printed = capsys.readouterr().out
    assert "reference models (never in the fit): 459 with an average ER" in printed
    split, _, _ = _er(tmp_path, "er-split", "--compare", "openclip,timm")
    pd.testing.assert_frame_equal(split, with_refs)


@pytest.mark.parametrize("argv, message", [
    (["--compare", "imagenet"], "--compare: unknown table 'imagenet'; expected one of published, openclip, timm"),
])
def test_unknown_compare_name_is_a_one_line_error(tmp_path, capsys, argv, message):
    mine = write_mine(tmp_path / "mine.csv")
    assert main(["er", "--results", str(mine), "--baseline", "published", "--out", str(tmp_path / "o"), *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and error.startswith(f"clipshift er: error: {message}")


@pytest.mark.parametrize("content, message", [
    ("", r"mine.csv: empty file \(no bytes\); expected a results table"),
    ("model,dataset,top1\n", r"mine.csv: empty table \(a header and no rows: model, dataset, top1\); expected one "
                             r"row per model"),
    ("model,dataset,top1\na,imagenet,70\nb,imagenet,60\n",
     r"mine.csv: no model with results on the baseline's datasets: expected accuracies on imagenet and on at least "
     r"one of imagenet-v2, imagenet-sketch, imagenet-r, imagenet-a; the 2 model\(s\) of .*mine.csv have imagenet$"),
    ("model,dataset,top1\na,test,70\na,v2,60\n", r"mine.csv: no rows left on ImageNet or its natural shifts"),
])
def test_bad_input_is_a_one_line_error_naming_the_file(tmp_path, capsys, content, message):
    mine = tmp_path / "mine.csv"
    mine.write_text(content)
    assert main(["er", "--results", str(mine), "--baseline", "published", "--bootstrap", "10",
                 "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert __import__("re").search(message, error), error


@pytest.mark.parametrize("header, model", [("model,dataset,top1", "my-clip"),
                                           ("model,pretrained,dataset,acc1", "my-clip/laion2b"),
                                           ("model,Dataset,Accuracy", "my-clip")])
def test_long_tables_read_as_written(tmp_path, header, model):
    rows = [header] + [(f"{m},laion2b,{d},{v}" if "pretrained" in header else f"{m},{d},{v}")
                       for m, accs in MINE.items() for d, v in accs.items()]
    path = tmp_path / "long.csv"
    path.write_text("\n".join(rows) + "\n")
    assert detect_format(path) == "columns"
    frame = read_results(path).set_index(["model", "dataset"])
    assert len(frame) == 10 and frame.loc[(model, "imagenet-a"), "value"] == pytest.approx(0.305)
    assert frame.loc[(model.replace("clip", "resnet"), "imagenet-a"), "value"] == pytest.approx(0.005)  # percent
    gz = tmp_path / "long.csv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    pd.testing.assert_frame_equal(read_results(gz).drop(columns="source"), read_results(path).drop(columns="source"))


def _stamped(path: Path, classes: str) -> Path:
    """This project's long results.csv, each row stamped as clipshift eval stamps it."""
    sizes = {"imagenet": 50000, "imagenet-v2": 10000, "imagenet-sketch": 50889, "imagenet-r": 30000,
             "imagenet-a": 7500}
    rows = []
    for model, accs in MINE.items():
        for dataset, value in accs.items():
            space = classes if dataset in ("imagenet-r", "imagenet-a") else "1000"
            variant = "; variant=matched-frequency" if dataset == "imagenet-v2" else ""
            stamp = f"classes={space}; images={sizes[dataset]}{variant}; prompts=openai 80 #1a2b3c4d; clipshift=0.1.0"
            rows.append(dict(model=model, dataset=dataset, metric="top1", value=value / 100,
                             num_examples=sizes[dataset], group="mine", protocol=stamp))
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_stamped_results_against_the_published_baseline(tmp_path, capsys):
    masked = _stamped(tmp_path / "results.csv", "200 of 1000")
    er = effective_robustness(masked, "published", n_bootstrap=50, compare="openclip")
    assert set(er["role"]) == {"baseline", "user", "reference"}
    assert er.attrs["protocols"]["imagenet-r"].startswith("classes=200 of 1000; images=30000")
    full = _stamped(tmp_path / "full.csv", "1000")  # ImageNet-R and -A over all 1000 classes: not timm's protocol
    assert main(["er", "--results", str(full), "--baseline", "published", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "imagenet-r: rows measured under different protocols (classes differ)" in error
    assert "(full.csv: 2 model(s), e.g. my-clip)" in error and "timm results (" in error


def test_several_results_tables_are_all_the_users(tmp_path, capsys):
    """--results twice: both tables' models are the user's, each row exactly as with the two models in one
    table; a model in both tables, or a table meeting no baseline dataset, is a one-line error naming it."""
    er_one, fits_one, _ = _er(tmp_path, "one")
    clip = write_mine(tmp_path / "clip.csv", {"my-clip": MINE["my-clip"]})
    resnet = write_mine(tmp_path / "resnet.csv", {"my-resnet": MINE["my-resnet"]})
    out = tmp_path / "two"
    assert main(["er", "--results", str(clip), "--results", str(resnet), "--baseline", "published",
                 "--bootstrap", "100", "--out", str(out)]) == 0
    er_two = pd.read_csv(out / "er.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out / "fits.csv"), fits_one)
    key = ["model", "dataset"]
    drop = ["source", "group"]  # a table's models are grouped by its file name
    pd.testing.assert_frame_equal(er_two.drop(columns=drop).sort_values(key).reset_index(drop=True),
                                  er_one.drop(columns=drop).sort_values(key).reset_index(drop=True))
    users = er_two[er_two["role"] == "user"].drop_duplicates("model").set_index("model")["group"].to_dict()
    assert users == {"my-clip": "clip", "my-resnet": "resnet"}
    capsys.readouterr()
    assert main(["er", "--results", str(clip), "--results", str(write_mine(tmp_path / "again.csv")),
                 "--baseline", "published", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "again.csv: model 'my-clip' is in" in error and "clip.csv too" in error
    (tmp_path / "id_only.csv").write_text("model,dataset,top1\nx,imagenet,70\n")
    assert main(["er", "--results", str(clip), "--results", str(tmp_path / "id_only.csv"),
                 "--baseline", "published", "--bootstrap", "10", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert "id_only.csv: no model with results on the baseline's datasets" in error
