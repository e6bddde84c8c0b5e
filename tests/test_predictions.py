"""Per-image predictions (issue 24, part 1): `clipshift eval --save-predictions/--save-logits`, the
quickstart's and the study's files, `read_predictions`, and the results table recomputed from them to
the last bit; `--class-space full` beside the masked ImageNet-R/-A/ObjectNet."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clipshift.cli import main
from clipshift.data.imagenet import open_suite
from clipshift.evaluate import ImageTensors
from clipshift.evaluate.predictions import (prediction_logits, predictions_path, read_meta, read_predictions,
                                            recompute_metrics)
from clipshift.models.factory import ModelSpec, build_model, get_tokenizer
from clipshift.models.interface import EvalModel
from clipshift.world.shapes import CLASS_NAMES
from miniature_real import write_imagenet_r, write_imagenet_val, write_objectnet

METRICS = ["top1", "top5", "mean_per_class_recall"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """imagenet/val (4 wnids, 3 images each, plus one undecodable), imagenet-r (4 wnids), objectnet-1.0 (4 mapped
    folders and an unmapped one, red borders)."""
    root = tmp_path_factory.mktemp("data")
    val = write_imagenet_val(root, per_class=3)
    next(val.iterdir()).joinpath("broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    write_imagenet_r(root, per_class=3)
    write_objectnet(root, per_class=2)
    return root


def _eval(*args) -> int:
    return main(["eval", "--workers", "0", "--batch-size", "8", "--quiet", *map(str, args)])


def _results(out: Path) -> pd.DataFrame:
    # values parsed by Python's float (correctly rounded): the exact float64 written, to compare to the last bit
    results = pd.read_csv(out / "results.csv", dtype={"value": str})
    return results.assign(value=results["value"].map(float))


def _assert_recomputed(out: Path, model: str) -> pd.DataFrame:
    """Every metric and num_examples of results.csv recomputed from the predictions, compared exactly."""
    table = read_predictions(out, model=model)
    again = recompute_metrics(table).set_index("dataset")
    results = _results(out)
    results = results[results["model"] == model]
    assert set(again.index) == set(results["dataset"])
    for row in results.to_dict("records"):
        assert again.loc[row["dataset"], row["metric"]] == row["value"], (row["dataset"], row["metric"])
        assert again.loc[row["dataset"], "num_examples"] == row["num_examples"]
    for dataset, part in table.groupby("dataset"):  # top-1 by hand: float32(correct / n), as the loop reports it
        correct = (part["pred"] == part["class_1"]) & part["correct"]
        by_hand = float(np.float32(correct.sum()) / np.float32(len(part)))
        assert by_hand == results.set_index(["dataset", "metric"]).loc[(dataset, "top1"), "value"]
    return table


def test_eval_predictions_recompute_the_results_exactly(data_root, weights, tmp_path, capsys):
    out = tmp_path / "out"
    assert _eval("--model", "clipshift-tiny", "--pretrained", weights["clip"], "--datasets",
                 "imagenet,imagenet-r,objectnet", "--data-root", data_root, "--out", out, "--templates", "simple",
                 "--save-logits") == 0
    assert "per-image predictions with logits" in capsys.readouterr().out
    model = "clipshift-tiny/tiny_clip.pt"
    table = _assert_recomputed(out, model)
    metas = {m["dataset"]: m for m in table.attrs["predictions"]}
    folder = out / "predictions" / "clipshift-tiny__tiny_clip.pt"  # the model's name made safe for a file system
    assert predictions_path(out, model, "imagenet") == folder / "imagenet.parquet"

    imagenet = table[table["dataset"] == "imagenet"]
    assert len(imagenet) == 12 and metas["imagenet"]["images"] == 13 and metas["imagenet"]["images_skipped"] == 1
    assert metas["imagenet"]["skipped_ids"][0].endswith("/broken.JPEG")
    assert imagenet["image_id"].str.match(r"^n\d{8}/ILSVRC2012_val_\d{8}\.JPEG$").all()
    assert prediction_logits(imagenet).shape == (12, 1000)
    first = imagenet.iloc[0]  # the top-5 are the best scored logits, best first
    logits = prediction_logits(imagenet)[0]
    assert [first[f"class_{j}"] for j in range(1, 6)] == list(np.argsort(-logits, kind="stable")[:5])
    assert first["score_1"] == logits.max() and first["pred"] == first["class_1"]

    rendition = table[table["dataset"] == "imagenet-r"]  # only the 4 wnids present compete
    scored = open_suite("imagenet-r", data_root=data_root).class_indices
    assert metas["imagenet-r"]["scored_classes"] == scored and len(scored) == 4
    assert set(rendition[[f"class_{j}" for j in range(1, 5)]].stack()) <= set(scored)
    assert "class_5" not in rendition.dropna(axis=1).columns  # min(5, 4 scored classes)
    assert prediction_logits(rendition).shape == (12, 4)
    assert np.array_equal(prediction_logits(rendition).argmax(1), [scored.index(c) for c in rendition["pred"]])

    objectnet = table[table["dataset"] == "objectnet"]  # mapped folders only; any mapped class counts
    assert len(objectnet) == 8 and objectnet["image_id"].str.startswith("images/").all()
    assert metas["objectnet"]["protocol"].startswith("classes=4 folders mapped to ")
    assert "crop=2px border" in metas["objectnet"]["protocol"]
    counts = [int(c in metas["objectnet"]["target_classes"][t]) for t, c in zip(objectnet["target"], objectnet["pred"])]
    assert counts == objectnet["correct"].astype(int).tolist()


def test_class_space_full_beside_the_mask_without_encoding_again(data_root, weights, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["--model", "timm/clipshift_convnet_tiny", "--pretrained", weights["timm"], "--datasets",
            "imagenet-r,objectnet", "--data-root", data_root, "--out", out, "--save-predictions"]
    assert _eval(*args) == 0
    from clipshift.evaluate import loop

    def no_encoding(*a, **k):
        raise AssertionError("images encoded again: the full class space reuses the masked suite's features")
    monkeypatch.setattr(loop, "_encode_shard", no_encoding)
    assert _eval(*args, "--class-space", "full") == 0
    results = _results(out)
    top1 = results[results["metric"] == "top1"].set_index("dataset")
    assert set(top1.index) == {"imagenet-r", "imagenet-r-1000", "objectnet", "objectnet-1000"}
    assert top1.loc["imagenet-r", "protocol"].startswith("classes=4 of 1000; images=12; prompts=none (own head)")
    assert top1.loc["imagenet-r-1000", "protocol"].startswith("classes=1000; images=12;")
    assert "folders mapped, all 1000" in top1.loc["objectnet-1000", "protocol"]
    model = "clipshift_convnet_tiny/tiny_timm"
    table = _assert_recomputed(out, model)
    masked, full = (table[table["dataset"] == d] for d in ("imagenet-r", "imagenet-r-1000"))
    scored = set(open_suite("imagenet-r", data_root=data_root).class_indices)
    assert set(masked["pred"]) <= scored and not set(full["pred"]) <= scored  # random weights: others win
    assert "logits" not in table.columns
    assert top1.loc["imagenet-r-1000", "value"] <= top1.loc["imagenet-r", "value"]  # more classes compete
    assert main(["eval", "--model", "x", "--world", str(tmp_path), "--class-space", "full", "--out", str(out)]) == 2


def test_bad_prediction_files_are_one_line_errors_naming_the_file(data_root, weights, tmp_path):
    out = tmp_path / "out"
    assert _eval("--model", "timm/clipshift_convnet_tiny", "--pretrained", weights["timm"], "--datasets", "imagenet-r",
                 "--data-root", data_root, "--out", out, "--save-predictions", "--no-cache") == 0
    good = next((out / "predictions").rglob("*.parquet"))
    text = tmp_path / "bad" / "text.parquet"
    text.parent.mkdir()
    text.write_text("model,dataset\n")
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(plain)
    import pyarrow.parquet as pq

    table = pq.read_table(good)
    cut = tmp_path / "cut.parquet"
    pq.write_table(table.drop_columns(["pred"]), cut)
    newer = tmp_path / "newer.parquet"
    meta = json.loads(table.schema.metadata[b"clipshift-predictions"])
    pq.write_table(table.replace_schema_metadata({"clipshift-predictions": json.dumps({**meta, "format": 99})}), newer)
    for path, message in ((text, "not a Parquet file"), (plain, "without the 'clipshift-predictions' metadata"),
                          (cut, r"missing column\(s\) \['pred'\]"), (newer, "format 99 is newer")):
        with pytest.raises(ValueError, match=message) as error:
            read_predictions(path)
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"bad.*not a Parquet file"):
        read_predictions(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="no predictions"):
        read_predictions(tmp_path / "weights" if (tmp_path / "weights").is_dir() else data_root)
    with pytest.raises(ValueError, match=r"no predictions for model 'other'.*clipshift_convnet_tiny/tiny_timm"):
        read_predictions(out, model="other")
    assert read_meta(good)["dataset"] == "imagenet-r"


def test_quickstart_models_write_predictions_of_their_rows(tmp_path):
    """The quickstart's evaluation (in-memory world images with their file ids): one file per row, the
    bare-name head's under its own model name, top-1 recomputed to the last bit."""
    from clipshift.recipes.quickstart.run import evaluate_model

    rng = np.random.default_rng(0)
    sets = {name: ImageTensors(torch.from_numpy(rng.integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)),
                               torch.from_numpy(rng.integers(0, len(CLASS_NAMES), 20)),
                               [f"{CLASS_NAMES[0]}/{name}_{i:03d}.png" for i in range(20)])
            for name in ("test", "sketch")}
    clip = build_model(ModelSpec("clip", "clipshift-tiny-bow", list(CLASS_NAMES)), seed=0).eval()
    model = EvalModel.wrap(clip, "clip", name="contrastive_narrow", class_names=list(CLASS_NAMES),
                           tokenizer=get_tokenizer("clipshift-tiny-bow"))
    entry = dict(name="contrastive_narrow", group="contrastive narrow", objective="contrastive", seed=2)
    rows = evaluate_model(model, entry, sets, tmp_path)
    assert [(r["model"], r["dataset"]) for r in rows] == [
        ("contrastive_narrow", "test"), ("contrastive_narrow_bare", "test"),
        ("contrastive_narrow", "sketch"), ("contrastive_narrow_bare", "sketch")]
    assert rows[0]["protocol"].startswith("classes=world 12; images=20; prompts=world 12 #")
    assert rows[1]["protocol"].startswith("classes=world 12; images=20; prompts=bare 1 #")
    assert "preprocess=uint8 32x32 as stored" in rows[0]["protocol"]
    table = read_predictions(tmp_path)
    again = recompute_metrics(table).set_index(["model", "dataset"])
    for row in rows:
        assert again.loc[(row["model"], row["dataset"]), "top1"] == row["value"]
        assert again.loc[(row["model"], row["dataset"]), "num_examples"] == row["num_examples"] == 20
    assert table.loc[table["dataset"] == "test", "image_id"].iloc[0] == f"{CLASS_NAMES[0]}/test_000.png"
    assert read_predictions(tmp_path, model="contrastive_narrow_bare", dataset="sketch").attrs["predictions"][0][
        "class_names"] == list(CLASS_NAMES)
