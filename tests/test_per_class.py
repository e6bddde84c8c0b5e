"""Per-class accuracy under shift: the scoring split by class, `clipshift eval --per-class` on
ImageNet-layout trees and on the embedded world's exported sets (`--world`)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from clipshift.cli import main
from clipshift.data.imagenet import EvalSuite, SuiteDataset, imagenet_wnids, open_suite, score
from clipshift.data.eval_sets import open_world_sets
from clipshift.evaluate.per_class import PER_CLASS_COLUMNS, per_class_accuracy
from clipshift.models import convnet  # noqa: F401  (registers the tiny timm convnet)
from clipshift.models.factory import ModelSpec, build_model, save_checkpoint
from clipshift.models.load import load_model
from clipshift.world.shapes import CLASS_NAMES

NAMES = [f"class{i}" for i in range(10)]


def test_per_class_accuracy_by_hand():
    """A 10-class label space; the suite scores classes 2, 5, 7 only, and target 2 (an ObjectNet-like
    folder) accepts class 7 or 5."""
    suite = EvalSuite(name="toy", root=Path("."), samples=[], target_classes=[(2,), (5,), (7, 5)],
                      target_names=["n02", "n05", "both"], class_indices=[2, 5, 7], num_classes=10)
    logits = torch.full((6, 10), -5.0)
    best = [2, 9, 5, 7, 5, 2]  # class 9 scores highest for example 1 but is outside the subset
    for i, c in enumerate(best):
        logits[i, c] = 3.0
    logits[1, 5] = 1.0  # → 5 wins inside the subset
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    # predictions inside the subset: 2, 5, 5, 7, 5, 2 → target 0: 1/2, target 1: 1/2, target 2: 1/2
    table = per_class_accuracy(logits, targets, suite, NAMES)
    assert table.columns.tolist() == ["class", "top1", "num_examples", "class_id"]
    assert table["class"].tolist() == ["class2", "class5", "both"]  # several classes: the folder's name
    assert table["top1"].tolist() == [0.5, 0.5, 0.5] and table["num_examples"].tolist() == [2, 2, 2]
    overall = score(logits, targets, suite)["top1"]
    assert (table["top1"] * table["num_examples"]).sum() / table["num_examples"].sum() == pytest.approx(overall)
    assert per_class_accuracy(logits, targets, suite)["class"].tolist() == ["n02", "n05", "both"]
    with pytest.raises(ValueError, match=r"class_names: 3 names for a 10-class label space"):
        per_class_accuracy(logits, targets, suite, NAMES[:3])
    with pytest.raises(ValueError, match=r"logits must be a \(N, 10\) tensor"):
        per_class_accuracy(logits[:, :4], targets, suite)


def _png(folder: Path, n: int, rng, size: int = 32) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")


def test_eval_per_class_on_imagenet_layout(tmp_path):
    rng = np.random.default_rng(0)
    wnids = [imagenet_wnids()[i] for i in (1, 207, 417)]
    for wnid, n in zip(wnids, (2, 3, 1)):
        _png(tmp_path / "data" / "imagenet-r" / wnid, n, rng, 40)
    torch.manual_seed(0)
    weights = tmp_path / "tiny_timm.pth"
    torch.save(timm.create_model("clipshift_convnet_tiny", num_classes=1000).state_dict(), weights)
    out = tmp_path / "out"
    assert main(["eval", "--model", "timm/clipshift_convnet_tiny", "--pretrained", str(weights), "--datasets",
                 "imagenet-r", "--data-root", str(tmp_path / "data"), "--out", str(out), "--per-class",
                 "--workers", "0", "--quiet", "--no-cache"]) == 0
    table = pd.read_csv(out / "per_class.csv")
    assert table.columns.tolist() == PER_CLASS_COLUMNS
    assert table["class_id"].tolist() == wnids and table["num_examples"].tolist() == [2, 3, 1]
    assert table["class"].tolist() == ["goldfish", "Golden Retriever", "balloon"]  # open_clip's short names
    # by hand: masked argmax over the three classes, per folder
    model = load_model("timm/clipshift_convnet_tiny", str(weights))
    suite = open_suite("imagenet-r", data_root=tmp_path / "data")
    ds = SuiteDataset(suite, model.preprocess)
    with torch.no_grad():
        logits = model.module(torch.stack([ds[i][0] for i in range(len(ds))]))
    predicted = torch.tensor(suite.class_indices)[logits[:, suite.class_indices].argmax(1)]
    truth = torch.tensor([suite.target_classes[t][0] for t in suite.targets])
    hits = (predicted == truth).double().numpy()
    targets = np.array(suite.targets)
    assert table["top1"].tolist() == pytest.approx([hits[targets == t].mean() for t in range(3)])
    top1 = pd.read_csv(out / "results.csv").set_index("metric").loc["top1", "value"]
    assert (table["top1"] * table["num_examples"]).sum() / 6 == pytest.approx(top1)


def test_eval_per_class_on_the_world(tmp_path, capsys):
    rng = np.random.default_rng(1)
    world = tmp_path / "world"
    for split in ("test", "sketch"):
        for name in CLASS_NAMES[:4]:
            _png(world / split / name, 2, rng)
    spec = ModelSpec(kind="classifier", architecture="clipshift-tiny", class_names=list(CLASS_NAMES))
    checkpoint = save_checkpoint(build_model(spec, seed=0), spec, tmp_path / "supervised_narrow")
    out = tmp_path / "out"
    assert main(["eval", "--model", str(checkpoint), "--world", str(world), "--per-class", "--out", str(out),
                 "--workers", "0", "--quiet", "--no-cache"]) == 0
    assert "per_class.csv (8 rows)" in capsys.readouterr().out
    table = pd.read_csv(out / "per_class.csv")
    assert set(table["dataset"]) == {"test", "sketch"} and set(table["class"]) == set(CLASS_NAMES[:4])
    assert (table["num_examples"] == 2).all() and (table["model"] == "supervised_narrow").all()
    # by hand: the classifier's argmax over the 12 world classes
    model = load_model(str(checkpoint))
    suite = open_world_sets(world, ["sketch"])[0]
    ds = SuiteDataset(suite, model.preprocess)
    with torch.no_grad():
        predicted = model.classify(model.encode_image(torch.stack([ds[i][0] for i in range(len(ds))]))).argmax(1)
    hits = (predicted == torch.tensor(suite.targets)).double().numpy()
    got = table[table.dataset == "sketch"].set_index("class")["top1"]
    for t, name in enumerate(CLASS_NAMES[:4]):
        assert got[name] == pytest.approx(hits[np.array(suite.targets) == t].mean())
    # rerunning replaces the rows instead of appending duplicates
    assert main(["eval", "--model", str(checkpoint), "--world", str(world), "--datasets", "sketch", "--per-class",
                 "--out", str(out), "--workers", "0", "--quiet", "--no-cache"]) == 0
    assert len(pd.read_csv(out / "per_class.csv")) == 8


def test_world_suite_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--world .*: not a folder"):
        open_world_sets(tmp_path / "missing")
    (tmp_path / "test" / "dragon").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"test: 1 folder\(s\) name no known class, e.g. \['dragon'\]"):
        open_world_sets(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no evaluation set 'v2'"):
        open_world_sets(tmp_path, ["v2"])
