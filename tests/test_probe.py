"""`clipshift.probe`: kurtosis and outlier features, pruning, concept probes, CKA, activations,
the Broden loader, and the whole probe on a (very small) quickstart run directory."""

import argparse
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import scipy.stats
import timm
import torch
from PIL import Image
from torch import nn

from clipshift.data.imagenet import imagenet_wnids
from clipshift.models import convnet  # noqa: F401  (registers the tiny timm convnet)
from clipshift.models.factory import ModelSpec, build_model, normalize_images, register_model_configs
from clipshift.models.load import load_model
from clipshift.probe import (OUTLIER_RATIO, activation_profile, auc_score, cka_matrix, collect_activations,
                             concept_probes, count_concepts, fit_logistic, hsic_unbiased, kurtosis, kurtosis_summary,
                             linear_cka, load_broden, minibatch_cka, outlier_dimensions, probe_run, prune,
                             pruning_experiment, summarize_pruning, world_concepts)
from clipshift.probe.concepts import split_mask
from clipshift.cli_probe import add_parser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _gaussian(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- kurtosis and outlier features ----------------------------------------------------------------------------

def test_kurtosis_matches_scipy_and_is_three_for_gaussian_activations():
    h = _gaussian(3000, 512)
    k = kurtosis(h)
    reference = scipy.stats.kurtosis(h.numpy(), axis=1, fisher=False, bias=True)
    np.testing.assert_allclose(k.numpy(), reference, rtol=1e-10)
    summary = kurtosis_summary(h)
    assert abs(summary["kurtosis_mean"] - 3) < 0.05 and abs(summary["excess_kurtosis_mean"]) < 0.05
    assert summary["excess_kurtosis_mean"] == pytest.approx(summary["kurtosis_mean"] - 3)
    assert summary["kurtosis_std"] == pytest.approx(np.std(reference, ddof=1))
    assert summary["kurtosis_sem"] == pytest.approx(summary["kurtosis_std"] / np.sqrt(3000))
    assert summary["n_examples"] == 3000 and summary["n_dims"] == 512
    assert len(outlier_dimensions(h)) == 0
    # even with unequal but ordinary per-dimension scales nothing is an outlier at the default ratio
    scaled = h * torch.linspace(0.5, 2.0, 512, dtype=torch.float64)
    assert len(outlier_dimensions(scaled)) == 0


def test_planted_outlier_dimensions_are_found_and_raise_kurtosis():
    h = _gaussian(2000, 256, seed=1)
    planted = [200, 5, 77]
    h[:, planted] *= torch.tensor([60.0, 40.0, 20.0], dtype=torch.float64)
    found = outlier_dimensions(h)
    assert list(found) == planted  # largest first
    assert kurtosis_summary(h)["kurtosis_mean"] > 20
    profile = activation_profile(h)
    assert list(profile["dim"][:3]) == planted and list(profile["rank"]) == list(range(256))
    assert profile["ratio_to_median"].iloc[0] == pytest.approx(
        h[:, 200].abs().mean().item() / h.abs().mean(0).median().item())
    # the threshold is configurable: 30x keeps the two largest, 1000x none
    assert list(outlier_dimensions(h, ratio=30)) == [200, 5]
    assert len(outlier_dimensions(h, ratio=1000)) == 0
    assert OUTLIER_RATIO == 10.0


def test_kurtosis_input_errors():
    with pytest.raises(ValueError, match="matrix"):
        kurtosis(torch.zeros(5))
    constant = torch.ones(4, 8)
    constant[0] = torch.arange(8.0)
    assert torch.isnan(kurtosis(constant)[1:]).all()
    assert kurtosis_summary(constant)["n_constant"] == 3


# --- CKA -------------------------------------------------------------------------------------------------------

def _naive_hsic_biased(x, y):
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, l = x @ x.T, y @ y.T
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def _naive_hsic_unbiased(x, y):
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


def test_cka_is_one_under_rotation_and_scaling_and_near_zero_for_independent():
    x = _gaussian(1200, 48, seed=2)
    q, _ = torch.linalg.qr(_gaussian(48, 48, seed=3))
    rotated = 3.7 * x @ q + 5.0  # orthogonal rotation, isotropic scaling and a shift
    assert linear_cka(x, rotated) == pytest.approx(1.0, abs=1e-9)
    assert minibatch_cka(x, rotated, batch_size=100) == pytest.approx(1.0, abs=1e-9)
    independent = _gaussian(1200, 32, seed=4)
    assert linear_cka(x, independent) < 0.06
    assert abs(minibatch_cka(x, independent, batch_size=100)) < 0.02
    # the full estimator agrees with the textbook Gram-matrix formula
    xs, ys = x[:200].numpy(), independent[:200].numpy()
    naive = _naive_hsic_biased(xs, ys) / np.sqrt(_naive_hsic_biased(xs, xs) * _naive_hsic_biased(ys, ys))
    assert linear_cka(x[:200], independent[:200]) == pytest.approx(naive, rel=1e-9)
    assert hsic_unbiased(xs, ys) == pytest.approx(_naive_hsic_unbiased(xs, ys), rel=1e-9, abs=1e-12)


def test_minibatch_cka_agrees_with_full_cka():
    x = _gaussian(6000, 16, seed=5)
    mix = _gaussian(16, 16, seed=6)
    y = torch.tanh(x @ mix) + 0.8 * _gaussian(6000, 16, seed=7)  # related, not linearly identical
    full = linear_cka(x, y)
    assert 0.2 < full < 0.95
    for batch_size in (250, 600):
        assert minibatch_cka(x, y, batch_size=batch_size) == pytest.approx(full, abs=0.02)
    # one batch holding every example is the unbiased estimator on the whole set
    whole = minibatch_cka(x[:500], y[:500], batch_size=500, seed=None)
    unbiased = hsic_unbiased(x[:500], y[:500]) / np.sqrt(hsic_unbiased(x[:500], x[:500]) * hsic_unbiased(y[:500], y[:500]))
    assert whole == pytest.approx(unbiased, rel=1e-9)


def test_cka_matrix_is_symmetric_with_unit_diagonal():
    x = _gaussian(400, 8, seed=8)
    reps = {"a": x, "b": x @ _gaussian(8, 4, seed=9), "c": _gaussian(400, 6, seed=10)}
    for batch_size in (None, 100):
        m = cka_matrix(reps, batch_size=batch_size)
        assert list(m.index) == ["a", "b", "c"] and np.allclose(m.to_numpy(), m.to_numpy().T)
        assert np.allclose(np.diag(m.to_numpy()), 1.0)
        assert m.at["a", "b"] > m.at["a", "c"] + 0.3
    with pytest.raises(ValueError, match="same examples"):
        cka_matrix({"a": x, "b": x[:10]})


# --- concept probes --------------------------------------------------------------------------------------------

def test_auc_from_ranks_matches_pairwise_counting():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)  # many ties
    labels = rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert auc_score(scores, labels) == pytest.approx(pairwise)
    assert auc_score([1, 2, 3], [0, 1, 1]) == 1.0
    assert np.isnan(auc_score([1, 2], [1, 1]))


def test_concept_probe_finds_a_planted_concept_and_not_a_shuffled_one():
    g = torch.Generator().manual_seed(11)
    h = torch.randn(1200, 64, generator=g)
    direction = torch.randn(64, generator=g)
    projection = (h @ direction) / direction.norm()
    planted = (projection + 0.3 * torch.randn(1200, generator=g) > 0.8).float().numpy()
    shuffled = np.random.default_rng(1).permutation(planted)
    partial = planted.copy()
    partial[:600] = np.nan  # annotated for half of the images only
    rare = np.zeros(1200)
    rare[:6] = 1  # too few positives to evaluate
    labels = pd.DataFrame({"planted": planted, "shuffled": shuffled, "partial": partial, "rare": rare})
    table = concept_probes(h, labels).set_index("concept")
    assert table.at["planted", "encoded"]
    test = split_mask(1200)  # the held-out half; the true direction scores it at the oracle AUC
    oracle = auc_score(projection.numpy()[test], planted[test])
    assert 0.9 < oracle and oracle - 0.03 < table.at["planted", "auc"] <= oracle + 0.01
    assert abs(table.at["shuffled", "auc"] - 0.5) < 0.08 and not table.at["shuffled", "encoded"]
    assert table.at["partial", "encoded"]
    assert table.at["partial", "n_train_pos"] + table.at["partial", "n_train_neg"] + \
        table.at["partial", "n_test_pos"] + table.at["partial", "n_test_neg"] == 600
    assert not table.at["rare", "evaluated"] and np.isnan(table.at["rare", "auc"])
    # the same concept hidden in other features is not found there
    other = torch.randn(1200, 64, generator=g)
    assert not concept_probes(other, labels).set_index("concept").at["planted", "encoded"]


def test_logistic_probe_reaches_the_regularised_optimum():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] - x[:, 1] + 0.7 * torch.randn(300, generator=g, dtype=torch.float64) > 0).double()
    probe = fit_logistic(x, y, l2=0.1, balanced=False, dtype=torch.float64)
    z = (x - probe.mean) / probe.std
    residual = torch.sigmoid(z @ probe.weight[:, 0] + probe.bias[0]) - y
    gradient = z.T @ residual / 300 + 0.1 * probe.weight[:, 0]
    assert gradient.abs().max() < 1e-5 and residual.mean().abs() < 1e-5  # stationary: the optimum
    assert probe.weight[0, 0] > 0 > probe.weight[1, 0]


def test_count_concepts_encoded_and_unique():
    def table(aucs):
        return pd.DataFrame({"concept": ["a", "b", "c", "d"], "auc": aucs, "evaluated": [True, True, True, False],
                             "encoded": [a >= 0.8 for a in aucs]})
    probes = {"m1": table([0.9, 0.85, 0.5, np.nan]), "m2": table([0.95, 0.6, 0.9, np.nan]),
              "m3": table([0.81, 0.7, 0.6, np.nan])}
    counts = count_concepts(probes).set_index("model")
    assert counts["encoded"].to_dict() == {"m1": 2, "m2": 2, "m3": 1}
    assert counts["unique"].to_dict() == {"m1": 1, "m2": 1, "m3": 0}
    assert counts.at["m1", "evaluated"] == 3 and counts.at["m1", "mean_auc"] == pytest.approx((0.9 + 0.85 + 0.5) / 3)
    assert count_concepts(probes, threshold=0.9)["unique"].tolist() == [0, 1, 0]


def test_world_concepts_from_attributes():
    attrs = pd.DataFrame({"style": ["photo", "sketch", "photo", "sketch", "photo", "photo"],
                          "colour": ["red", "red", "blue", "blue", "red", "green"],
                          "fill": ["shaded", "outline", "gradient", "outline", "shaded", "gradient"],
                          "background": ["grass", "paper", "sky", "paper", "sky", "grass"],
                          "factors": ["", "rotation|clutter", np.nan, "clutter", "rotation|clutter", ""]})
    concepts = world_concepts(attrs)
    assert concepts["colour=red"].tolist() == [1, 1, 0, 0, 1, 0]
    assert concepts["factor=clutter"].tolist() == [0, 1, 0, 1, 1, 0]
    assert concepts["factor=rotation"].tolist() == [0, 1, 0, 0, 1, 0]
    # fill=outline and background=paper go with style=sketch on every image: one concept
    assert concepts["style=sketch|fill=outline|background=paper"].tolist() == [0, 1, 0, 1, 0, 0]
    assert len(concepts.columns) == 11 and not any(c.startswith("class") for c in concepts)
    assert world_concepts(attrs, dedupe=False)["fill=outline"].tolist() == [0, 1, 0, 1, 0, 0]
    assert len(world_concepts(attrs, dedupe=False).columns) == 13  # 2 styles, 3 colours, 3 fills, 3 backgrounds, 2 factors
    with pytest.raises(ValueError, match="lack the columns"):
        world_concepts(attrs.drop(columns=["fill"]))


# --- pruning ---------------------------------------------------------------------------------------------------

def test_pruning_changes_accuracy_only_through_the_pruned_dimensions():
    g = torch.Generator().manual_seed(13)
    h = torch.randn(600, 16, generator=g)
    used = [9, 11, 13, 15]  # the head reads only these; the others are ignored
    head = nn.Linear(16, 4, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        for c, j in enumerate(used):
            head.weight[c, j] = 1.0
    targets = h[:, used].argmax(dim=1)
    shifted = h + 0.2 * torch.randn(600, 16, generator=g)
    sets = {"id": (h, targets), "shift": (shifted, targets)}
    ignored = [j for j in range(16) if j not in used]
    order = ignored + used  # "largest first" puts the ignored dimensions first
    table = pruning_experiment(sets, head, order, ks=(2, 6, 12, 14), random_repeats=20, seed=0)
    largest = table[table["selection"] == "largest"].set_index(["k", "dataset"])["accuracy"]
    base = table[table["selection"] == "none"].set_index("dataset")["accuracy"]
    assert base["id"] == 1.0 and base["shift"] < 1.0
    for k in (2, 6, 12):
        assert largest[(k, "id")] == 1.0 and largest[(k, "shift")] == base["shift"]
    assert largest[(14, "id")] < 0.75  # two of the four used dimensions gone
    random = table[table["selection"] == "random"]
    hits = random["dims"].map(lambda s: bool(set(map(int, s.split(";"))) & set(used)))
    assert (random.loc[~hits & (random["dataset"] == "id"), "accuracy"] == 1.0).all()
    assert (random.loc[hits & (random["dataset"] == "id"), "accuracy"] < 1.0).all()
    assert hits.any() and (~hits).any()
    # the same seed draws the same random dimensions
    again = pruning_experiment(sets, head, order, ks=(2, 6, 12, 14), random_repeats=20, seed=0)
    assert again["dims"].tolist() == table["dims"].tolist()
    summary = summarize_pruning(table, "id", ["shift"]).set_index(["selection", "k"])
    assert summary.at[("largest", 14), "id_drop"] == pytest.approx(1.0 - largest[(14, "id")])
    pruned = prune(h, [1, 3])
    assert (pruned[:, [1, 3]] == 0).all() and torch.equal(pruned[:, [0, 2, 4]], h[:, [0, 2, 4]])


# --- activations -----------------------------------------------------------------------------------------------

def test_activations_hooks_and_cache(tmp_path):
    model = build_model(ModelSpec("classifier", "clipshift-tiny", ["a", "b", "c"]), seed=0).eval()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    acts = collect_activations(model, images, layers=["visual.trunk", "visual.trunk.stages.1"], batch_size=4,
                               cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        x = normalize_images(images)
        expected = model.encode_image(x)
        trunk = model.visual.trunk(x)
        stage1 = model.visual.trunk.stages[:2](model.visual.trunk.stem(x)).mean(dim=(2, 3))
    assert torch.allclose(acts.features, expected, atol=1e-5)
    assert torch.allclose(acts.layers["visual.trunk"], trunk, atol=1e-5)
    assert torch.allclose(acts.layers["visual.trunk.stages.1"], stage1, atol=1e-5)
    again = collect_activations(model, images, layers=["visual.trunk", "visual.trunk.stages.1"], cache_dir=tmp_path,
                                progress=False)
    assert again.cached and torch.equal(again.features, acts.features)
    assert torch.equal(again.layers["visual.trunk"], acts.layers["visual.trunk"])
    other = collect_activations(model, images[:5], cache_dir=tmp_path, progress=False)
    assert not other.cached
    with pytest.raises(ValueError, match="unknown layer"):
        collect_activations(model, images, layers=["visual.nope"], progress=False)


# --- Broden ----------------------------------------------------------------------------------------------------

def _seg_png(path: Path, numbers: np.ndarray) -> None:
    rgb = np.zeros(numbers.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = numbers % 256
    rgb[..., 1] = numbers // 256
    Image.fromarray(rgb).save(path)


@pytest.fixture()
def broden_root(tmp_path) -> Path:
    """A Broden-format tree: 4 images, pixel-level color/object PNGs, image-level scene labels."""
    base = tmp_path / "broden1_224"
    (base / "images" / "ade").mkdir(parents=True)
    (base / "images" / "dtd").mkdir(parents=True)
    (base / "label.csv").write_text("number,name,category,frequency,coverage,syns\n"
                                    "1,red-c,color(1),3,1.0,\n2,blue-c,color(1),1,1.0,\n"
                                    "300,person,object(2),2,1.0,\n7,street-s,scene(1),1,1.0,\n"
                                    "8,kitchen-s,scene(1),1,1.0,\n")
    rng = np.random.default_rng(0)
    for name in ("ade/a.jpg", "ade/b.jpg", "ade/c.jpg", "dtd/d.jpg"):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(base / "images" / name)
    seg = np.zeros((4, 4), dtype=np.int64)
    seg[:2, :2] = 300  # person, 4 pixels
    seg[3, 3] = 1  # red, 1 pixel
    _seg_png(base / "images" / "ade" / "a_object.png", np.where(seg == 300, 300, 0))
    _seg_png(base / "images" / "ade" / "a_color.png", np.where(seg == 1, 1, 0))
    _seg_png(base / "images" / "ade" / "b_color.png", np.full((4, 4), 2))
    _seg_png(base / "images" / "ade" / "c_object.png", np.full((4, 4), 0))
    _seg_png(base / "images" / "ade" / "c_color.png", np.full((4, 4), 1))
    (base / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,color,object,part,material,scene,texture\n"
        "ade/a.jpg,train,8,8,4,4,ade/a_color.png,ade/a_object.png,,,7,\n"
        "ade/b.jpg,train,8,8,4,4,ade/b_color.png,,,,8,\n"
        "ade/c.jpg,val,8,8,4,4,ade/c_color.png,ade/c_object.png,,,,\n"
        "dtd/d.jpg,val,8,8,4,4,,,,,,\n")
    return tmp_path


def test_broden_loader_on_a_tiny_tree(broden_root):
    data = load_broden(broden_root)  # the folder holding broden1_224
    assert [Path(p).name for p in data.paths] == ["a.jpg", "b.jpg", "c.jpg"]  # d has no annotation at all
    labels = data.labels
    assert set(labels.columns) == {"color/red-c", "color/blue-c", "object/person", "scene/street-s", "scene/kitchen-s"}
    assert labels["color/red-c"].tolist() == [1, 0, 1]
    assert labels["color/blue-c"].tolist() == [0, 1, 0]
    person = labels["object/person"].tolist()
    assert person[0] == 1 and np.isnan(person[1]) and person[2] == 0  # b has no object annotation: unknown
    assert labels["scene/street-s"].tolist()[0] == 1 and np.isnan(labels["scene/street-s"].tolist()[2])
    assert set(data.concepts["category"]) == {"color", "object", "scene"}
    assert data.concepts.set_index("concept").at["object/person", "number"] == 300
    # min_pixels: the single red pixel of a no longer counts
    assert load_broden(broden_root / "broden1_224", min_pixels=2).labels["color/red-c"].tolist() == [0, 0, 1]
    assert load_broden(broden_root, split="val").paths[0].endswith("c.jpg")
    only = load_broden(broden_root, categories=["scene"])
    assert set(only.labels.columns) == {"scene/kitchen-s", "scene/street-s"} and len(only) == 2
    assert len(load_broden(broden_root, max_images=2, seed=0)) == 2
    suite = data.suite()
    assert len(suite) == 3 and suite.samples[0][0] == data.paths[0]
    with pytest.raises(ValueError, match="unknown Broden categories"):
        load_broden(broden_root, categories=["smell"])
    (broden_root / "broden1_224" / "images" / "ade" / "c_color.png").unlink()
    with pytest.raises(FileNotFoundError, match="c_color.png"):
        load_broden(broden_root)
    with pytest.raises(FileNotFoundError, match="index.csv"):
        load_broden(broden_root / "broden1_224" / "images")


# --- real-model path: timm / open_clip on ImageNet-layout trees, through the CLI --------------------------------

def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="clipshift")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def _real_layouts(tmp_path: Path) -> None:
    """ImageNet and ImageNet-R trees (3 classes, 3 images each) under tmp_path/data, a tiny timm
    classifier (timm.pth), a tiny CLIP model (clip.pt) and one zero-shot template (templates.txt)."""
    rng = np.random.default_rng(0)
    wnids = [imagenet_wnids()[i] for i in (1, 207, 417)]
    for i, wnid in enumerate(wnids):
        for folder, ext in (("imagenet/val", ".JPEG"), ("imagenet-r", ".jpg")):
            (tmp_path / "data" / folder / wnid).mkdir(parents=True)
            for j in range(3):
                Image.fromarray(rng.integers(0, 255, (36, 40, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / folder / wnid / f"{j}{ext}", format="JPEG")
    torch.manual_seed(0)
    timm.create_model("clipshift_convnet_tiny", num_classes=1000)
    torch.save(timm.create_model("clipshift_convnet_tiny", num_classes=1000).state_dict(), tmp_path / "timm.pth")
    register_model_configs()
    torch.save(open_clip.create_model("clipshift-tiny").state_dict(), tmp_path / "clip.pt")
    (tmp_path / "templates.txt").write_text("a photo of a {}.\n")


def test_probe_cli_on_real_model_layouts(tmp_path, broden_root):
    _real_layouts(tmp_path)
    out = tmp_path / "out"
    code = _run_cli(["probe", "--model", "timm/clipshift_convnet_tiny", "--pretrained", str(tmp_path / "timm.pth"),
                     "--model", "clipshift-tiny", "--pretrained", str(tmp_path / "clip.pt"),
                     "--data-root", str(tmp_path / "data"), "--datasets", "imagenet,imagenet-r",
                     "--templates", str(tmp_path / "templates.txt"), "--broden", str(broden_root),
                     "--ks", "1,2", "--random-repeats", "2", "--workers", "0", "--batch-size", "4",
                     "--out", str(out), "--quiet"])
    assert code == 0
    table = pd.read_csv(out / "probe.csv")
    assert set(table["model"]) == {"clipshift_convnet_tiny/timm", "clipshift-tiny/clip.pt"}
    assert {"kurtosis", "outliers", "magnitude", "pruning", "cka"} <= set(table["analysis"])
    # k = 0 top-1 on imagenet equals the model's own scoring of the same images
    model = load_model("timm/clipshift_convnet_tiny", str(tmp_path / "timm.pth"))
    from clipshift.data.imagenet import open_suite, score
    from clipshift.evaluate.real import encode_suite
    suite = open_suite("imagenet", data_root=tmp_path / "data")
    feats = encode_suite(model, suite, workers=0, progress=False)
    with torch.no_grad():
        expected = score(model.classify(feats.features), feats.targets, suite)["top1"]
    got = table.query("model == 'clipshift_convnet_tiny/timm' and analysis == 'pruning' and key == 'none/k=0/imagenet'")
    assert got["value"].item() == pytest.approx(expected)
    assert (out / "figures" / "probe_cka.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "cache" / "features").is_dir()  # activations cached through encode_suite
    assert "Inside the representations" in (out / "probe.md").read_text()
    # a hooked layer of the timm model over an EvalSuite, then from the cache
    layer = collect_activations(model, suite, layers=["stages.2"], cache_dir=tmp_path / "c2", workers=0,
                                progress=False)
    cached = collect_activations(model, suite, layers=["stages.2"], cache_dir=tmp_path / "c2", workers=0,
                                 progress=False)
    assert layer.layers["stages.2"].shape == (9, model.module.num_features) and cached.cached
    assert torch.allclose(cached.layers["stages.2"], layer.layers["stages.2"])
    assert torch.allclose(layer.features, cached.features)
    # a hooked intermediate layer through the CLI, with er.csv for the kurtosis-vs-ER plot
    pd.DataFrame({"model": ["clipshift_convnet_tiny/timm"], "dataset": ["average"], "effective_robustness": [0.1],
                  "group": ["tiny"]}).to_csv(tmp_path / "er.csv", index=False)
    assert _run_cli(["probe", "--model", "timm/clipshift_convnet_tiny", "--pretrained", str(tmp_path / "timm.pth"),
                     "--data-root", str(tmp_path / "data"), "--datasets", "imagenet", "--layer", "stages.1",
                     "--er", str(tmp_path / "er.csv"), "--workers", "0", "--out", str(tmp_path / "out2"),
                     "--quiet"]) == 0
    table2 = pd.read_csv(tmp_path / "out2" / "probe.csv").set_index(["analysis", "key"])["value"]
    assert table2[("kurtosis@stages.1", "n_dims")] == model.module.stages[1][0][0].out_channels
    assert table2[("effective_robustness", "average")] == pytest.approx(0.1)
    assert (tmp_path / "out2" / "figures" / "probe_kurtosis_vs_er.png").exists()
    with pytest.raises(ValueError, match="--out is required"):
        _run_cli(["probe", "--model", "timm/clipshift_convnet_tiny", "--pretrained", str(tmp_path / "timm.pth"),
                  "--data-root", str(tmp_path / "data")])
    with pytest.raises(ValueError, match="once per --model"):
        _run_cli(["probe", "--model", "a", "--model", "b", "--pretrained", "x", "--out", str(out),
                  "--data-root", str(tmp_path / "data")])


def test_probe_models_from_python_matches_the_command(tmp_path, monkeypatch):
    from clipshift.data.imagenet import open_suite, score
    from clipshift.evaluate.heads import HeadSpec, LinearHead, ZeroShotHead, build_head, imagenet_class_names
    from clipshift.probe import pipeline, probe_models

    _real_layouts(tmp_path)
    timm_path, clip_path, templates = tmp_path / "timm.pth", tmp_path / "clip.pt", tmp_path / "templates.txt"
    assert _run_cli(["probe", "--model", "timm/clipshift_convnet_tiny", "--pretrained", str(timm_path),
                     "--model", "clipshift-tiny", "--pretrained", str(clip_path), "--data-root", str(tmp_path / "data"),
                     "--datasets", "imagenet,imagenet-r", "--templates", str(templates), "--ks", "1,2",
                     "--random-repeats", "2", "--workers", "0", "--batch-size", "4", "--out", str(tmp_path / "cmd"),
                     "--quiet"]) == 0
    built = []

    def recording(spec, model, **kwargs):
        head = build_head(spec, model, **kwargs)
        built.append((spec, kwargs, head))
        return head

    monkeypatch.setattr(pipeline, "build_head", recording)
    clip = load_model("clipshift-tiny", str(clip_path))  # a loaded model beside a (name, pretrained) pair
    out = tmp_path / "py"
    result = probe_models([("timm/clipshift_convnet_tiny", str(timm_path)), clip], ["imagenet", "imagenet-r"],
                          data_root=tmp_path / "data", templates=str(templates), ks=(1, 2), random_repeats=2,
                          workers=0, batch_size=4, out=out, progress=False)
    # the same numbers as the command, byte for byte, and real ones
    assert (out / "probe.csv").read_bytes() == (tmp_path / "cmd" / "probe.csv").read_bytes()
    table = pd.read_csv(tmp_path / "cmd" / "probe.csv").set_index(["model", "analysis", "key"])["value"]
    summary = result.summary.set_index("model")
    assert list(summary.index) == ["clipshift_convnet_tiny/timm", "clipshift-tiny/clip.pt"]
    for model in summary.index:
        assert summary.at[model, "kurtosis_mean"] == pytest.approx(table[(model, "kurtosis", "kurtosis_mean")])
        assert summary.at[model, "kurtosis_mean"] > 1.5
    assert 0 < table[("clipshift-tiny/clip.pt", "cka", "clipshift_convnet_tiny/timm")] < 1
    assert "Inside the representations" in result.markdown and result.markdown == (out / "probe.md").read_text()
    # the heads come from the registry: the timm model's own linear head, the CLIP model's zero-shot head
    (linear_spec, _, linear), (zs_spec, zs_options, zero_shot) = built
    assert linear_spec.kind == "linear" and isinstance(linear, LinearHead)
    assert zs_spec.kind == "zeroshot" and list(zs_spec.templates) == ["a photo of a {}."]
    assert isinstance(zero_shot, ZeroShotHead) and zs_options["cache_dir"] == out / "cache"
    registry = build_head(HeadSpec("zeroshot", templates=["a photo of a {}."]), clip, class_names=imagenet_class_names())
    assert torch.equal(zero_shot.weights, registry.weights)
    assert len(list((out / "cache" / "heads").glob("*.safetensors"))) == 1  # the registry's head cache
    suite = open_suite("imagenet", data_root=tmp_path / "data")
    acts = collect_activations(clip, suite, cache_dir=out / "cache", workers=0, progress=False)
    expected = score(registry(acts.features), acts.targets, suite)["top1"]
    assert table[("clipshift-tiny/clip.pt", "pruning", "none/k=0/imagenet")] == pytest.approx(expected)
    # another head by name, no cache; a --pretrained count that does not match fails before loading anything
    built.clear()
    probe_models([clip], "imagenet", data_root=tmp_path / "data", heads={clip.name: HeadSpec("zeroshot")},
                 templates="bare", ks=(1,), random_repeats=1, workers=0, out=tmp_path / "bare", cache=False,
                 progress=False)
    assert list(built[0][0].templates) == ["{}"] and built[0][1]["cache_dir"] is None
    assert not (tmp_path / "bare" / "cache").exists()
    with pytest.raises(ValueError, match="once per --model"):
        probe_models(["a", "b"], "imagenet", pretrained=["x"], data_root=tmp_path / "data", out=tmp_path / "x")


# --- end to end on a quickstart run directory ------------------------------------------------------------------

TINY_OVERRIDES = {"train_size": 480, "eval_size": 60, "adversarial_size": 24,
                  "baselines": [{"train_size": 60, "epochs": 1}, {"train_size": 240, "epochs": 2},
                                {"train_size": 480, "epochs": 3}],
                  "reference": {"train_size": 60, "epochs": 1}, "supervised": {"epochs": 3},
                  "contrastive": {"epochs": 1}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from clipshift.recipes.quickstart import load_config
    from clipshift.recipes.quickstart import run_quickstart

    out = tmp_path_factory.mktemp("quickstart_probe")
    run_quickstart(load_config("tiny", None, TINY_OVERRIDES), out, progress=False, quiet=True)
    return out


@pytest.mark.slow  # a second quickstart (~20 s); the quickstart tests check its probes, the tests above each probe
def test_probe_on_a_quickstart_run_directory(run_dir, tmp_path):
    out = tmp_path / "probe"
    result = probe_run(run_dir, out, max_images=600)
    table = pd.read_csv(out / "probe.csv")
    assert list(table.columns) == ["model", "analysis", "key", "value"]
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert sorted(table["model"].unique()) == checkpoints
    assert {"kurtosis", "outliers", "magnitude", "pruning", "concept_auc", "concepts", "cka",
            "effective_robustness"} <= set(table["analysis"])
    for name in ("probe_magnitudes.png", "probe_kurtosis_vs_er.png", "probe_cka.png"):
        data = (out / "figures" / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    value = table.set_index(["model", "analysis", "key"])["value"]

    # every eval image is used (eval_size < max_images): k = 0 accuracy is the quickstart's own top-1
    results = pd.read_csv(run_dir / "results.csv").set_index(["model", "dataset"])["value"]
    for model in ("supervised_diverse", "contrastive_narrow", "baseline_n480_e3"):
        for dataset in ("test", "sketch", "adversarial"):
            assert value[(model, "pruning", f"none/k=0/{dataset}")] == pytest.approx(results[(model, dataset)], abs=1e-6)

    # the kurtosis of one model, recomputed independently from its checkpoint and the exported images
    from clipshift.data import EvalImageFolder, load_all
    from clipshift.models.load import load_model
    from clipshift.world.shapes import CLASS_NAMES
    model = load_model(str(run_dir / "checkpoints" / "contrastive_diverse"))
    images, _, _ = load_all(EvalImageFolder(run_dir / "world" / "test", list(CLASS_NAMES)), progress=False)
    with torch.no_grad():
        h = model.encode_image(images).double().numpy()
    expected = scipy.stats.kurtosis(h, axis=1, fisher=False).mean()
    assert value[("contrastive_diverse", "kurtosis", "kurtosis_mean")] == pytest.approx(expected, rel=1e-4)
    assert value[("contrastive_diverse", "kurtosis", "excess_kurtosis_mean")] == pytest.approx(expected - 3, rel=1e-3)

    er = pd.read_csv(run_dir / "er.csv").query("dataset == 'average'").set_index("model")["effective_robustness"]
    assert value[("supervised_narrow", "effective_robustness", "average")] == pytest.approx(er["supervised_narrow"])
    assert ("reference", "effective_robustness", "average") not in value.index  # no ER for the reference model
    cka = result.cka
    assert np.allclose(np.diag(cka.to_numpy()), 1) and np.allclose(cka.to_numpy(), cka.to_numpy().T)
    assert value[("supervised_narrow", "cka", "contrastive_narrow")] == pytest.approx(
        cka.at["contrastive_narrow", "supervised_narrow"])
    counts = result.summary.set_index("model")
    assert (counts["concepts_encoded"] <= counts["concepts_evaluated"]).all()
    assert counts["concepts_evaluated"].iloc[0] >= 10  # styles, colours, fills, backgrounds, factors

    md = result.markdown
    assert md.startswith("## Inside the representations") and "](figures/probe_cka.png)" in md
    for model in checkpoints:
        assert f"`{model}`" in md
    assert f"{counts.at['supervised_narrow', 'kurtosis_mean']:.2f}" in md

    # the CLI on the same run directory, and its errors
    assert _run_cli(["probe", "--run", str(run_dir), "--out", str(tmp_path / "cli"), "--ks", "1,2",
                     "--random-repeats", "1", "--quiet"]) == 0
    cli_table = pd.read_csv(tmp_path / "cli" / "probe.csv")
    assert "largest/k=2/test" in set(cli_table["key"]) and "largest/k=4/test" not in set(cli_table["key"])
    with pytest.raises(FileNotFoundError, match="er.csv"):
        probe_run(run_dir / "world", tmp_path / "x")
    with pytest.raises(ValueError, match="no checkpoints for"):
        probe_run(run_dir, tmp_path / "x", models=["nope"])
