"""`clipshift eval`: open_clip / timm / own checkpoints on ImageNet-layout trees, caches, torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image

from clipshift.cli import main
from clipshift.data.imagenet import SuiteDataset, open_suite, score
from clipshift.evaluate import loop, real
from clipshift.models import convnet  # noqa: F401  (registers the tiny timm convnet)
from clipshift.models.load import load_model
from clipshift.robustness import effective_robustness, read_results
from eval_helpers import WNIDS, write_jpegs

def _eval(args: list[str]) -> int:
    return main(["eval", "--workers", "0", "--batch-size", "4", "--quiet", *args])


def test_eval_clip_from_local_file_then_cache_and_templates(data_root, weights, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    args = ["--model", "clipshift-tiny", "--pretrained", str(weights["clip"]), "--datasets", "imagenet,imagenet-r",
            "--data-root", str(data_root), "--out", str(out), "--templates", str(weights["templates"])]
    assert _eval(args) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["metric"]) == {"top1", "top5", "mean_per_class_recall"}
    row = results.set_index(["dataset", "metric"])
    assert row.loc[("imagenet", "top1"), "num_examples"] == 15 and row.loc[("imagenet", "top1"), "images_skipped"] == 1
    assert row.loc[("imagenet-r", "top1"), "num_examples"] == 6 and row.loc[("imagenet-r", "top1"), "images_skipped"] == 0
    assert (results["model"] == "clipshift-tiny/tiny_clip.pt").all()
    assert results["value"].between(0, 1).all()
    assert "undecodable images skipped" in capsys.readouterr().out

    # the same numbers by hand: encode, zero-shot head from the same prompts, masked scoring
    model = load_model("clipshift-tiny", str(weights["clip"]))
    names = real.imagenet_class_names()
    prompts = ["a photo of a {}.", "an image of {}."]
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.module.encode_text(model.tokenizer(
            [t.format(n) for n in names for t in prompts])), dim=-1).view(1000, 2, -1).mean(1)
        head = torch.nn.functional.normalize(text, dim=-1).T
        suite = open_suite("imagenet-r", data_root=data_root)
        ds = SuiteDataset(suite, model.preprocess)
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        feats = torch.nn.functional.normalize(model.module.encode_image(images), dim=-1)
    expected = score(feats @ head, torch.tensor(suite.targets), suite)
    assert row.loc[("imagenet-r", "top1"), "value"] == pytest.approx(expected["top1"])
    assert row.loc[("imagenet-r", "top5"), "value"] == pytest.approx(expected["top5"])

    # warm cache: other templates re-score without encoding a single image
    def no_encoding(*a, **k):
        raise AssertionError("images were encoded again despite the feature cache")
    monkeypatch.setattr(loop, "_encode_shard", no_encoding)
    assert _eval([*args[:-2], "--templates", "simple"]) == 0
    again = pd.read_csv(out / "results.csv")
    assert len(again) == len(results)  # the (model, dataset, metric) rows were replaced, not duplicated
    assert (again["templates"] == f"{len(real.resolve_templates('simple'))} templates").all()
    assert len(list((out / "cache" / "features").glob("*.safetensors"))) == 2
    assert len(list((out / "cache" / "heads").glob("*.safetensors"))) == 2


def test_eval_timm_classifier_matches_a_hand_computed_score(data_root, weights, tmp_path):
    out = tmp_path / "out"
    assert _eval(["--model", "timm/clipshift_convnet_tiny", "--pretrained", str(weights["timm"]),
                  "--datasets", "imagenet-r", "--data-root", str(data_root), "--out", str(out),
                  "--group", "baseline", "--no-cache"]) == 0
    results = pd.read_csv(out / "results.csv").set_index("metric")
    assert results.loc["top1", "model"] == "clipshift_convnet_tiny/tiny_timm"
    assert results.loc["top1", "group"] == "baseline" and results.loc["top1", "kind"] == "classifier"
    model = load_model("timm/clipshift_convnet_tiny", str(weights["timm"]))
    suite = open_suite("imagenet-r", data_root=data_root)
    ds = SuiteDataset(suite, model.preprocess)
    with torch.no_grad():
        logits = model.module(torch.stack([ds[i][0] for i in range(len(ds))]))
    # masked: only the 3 wnids present compete, even where another class has the largest logit
    subset = logits[:, suite.class_indices]
    predicted = torch.tensor(suite.class_indices)[subset.argmax(1)]
    truth = torch.tensor([suite.target_classes[t][0] for t in suite.targets])
    assert results.loc["top1", "value"] == pytest.approx((predicted == truth).float().mean().item())
    assert results.loc["top5", "value"] == 1.0  # 3 scored classes: the truth is always among the best 5


def test_eval_results_feed_er(data_root, weights, tmp_path):
    out = tmp_path / "out"
    assert _eval(["--model", "clipshift-tiny", "--pretrained", str(weights["clip"]), "--datasets",
                  "imagenet,imagenet-r", "--data-root", str(data_root), "--out", str(out), "--templates", "simple"]) == 0
    table = read_results(out / "results.csv")
    assert set(table["dataset"]) == {"imagenet", "imagenet-r"}
    baseline = pd.DataFrame([{"model": f"b{i}", "dataset": d, "metric": "top1", "value": v, "num_examples": 100}
                             for i, x in enumerate([0.2, 0.4, 0.6]) for d, v in (("imagenet", x),
                                                                               ("imagenet-r", x / 2))])
    er = effective_robustness(out / "results.csv", baseline, shifts=["imagenet-r"])
    assert "clipshift-tiny/tiny_clip.pt" in set(er["model"])


def test_eval_errors(data_root, weights, tmp_path, capsys):
    assert _eval(["--model", "clipshift-tiny", "--pretrained", str(weights["clip"]), "--datasets", "imagenet-x",
                  "--data-root", str(data_root), "--out", str(tmp_path)]) == 2
    assert "unknown ['imagenet-x']" in capsys.readouterr().err
    assert _eval(["--model", "clipshift-tiny", "--pretrained", str(weights["clip"]), "--datasets", "imagenet-sketch",
                  "--data-root", str(data_root), "--out", str(tmp_path)]) == 2
    assert "expected folder sketch/ under the data root" in capsys.readouterr().err
    assert _eval(["--model", "clipshift-tiny", "--pretrained", str(tmp_path / "missing.pt"), "--datasets",
                  "imagenet", "--data-root", str(data_root), "--out", str(tmp_path)]) == 2
    assert "no such checkpoint file" in capsys.readouterr().err
    assert _eval(["--model", "ViT-Q-99", "--pretrained", "openai", "--datasets", "imagenet",
                  "--data-root", str(data_root), "--out", str(tmp_path)]) == 2
    assert "unknown open_clip model 'ViT-Q-99'" in capsys.readouterr().err
    assert _eval(["--model", "timm/clipshift_convnet_tiny", "--datasets", "imagenet",
                  "--data-root", str(data_root), "--out", str(tmp_path)]) == 2
    assert "needs --pretrained" in capsys.readouterr().err
    assert _eval(["--model", "clipshift-tiny", "--pretrained", str(weights["clip"]), "--datasets", "imagenet",
                  "--data-root", str(data_root), "--out", str(tmp_path), "--strict", "--no-cache",
                  "--templates", str(weights["templates"])]) == 2  # 2 prompts a class, not 80: the head is built first
    err = capsys.readouterr().err
    assert "cannot decode image" in err and "broken.JPEG" in err


@pytest.mark.slow  # the CLIP zero-shot torchrun test below covers the same sharding and gathering
def test_torchrun_two_processes_give_the_same_numbers(data_root, weights, tmp_path, free_port):
    common = ["eval", "--model", "timm/clipshift_convnet_tiny", "--pretrained", str(weights["timm"]),
              "--datasets", "imagenet,imagenet-r", "--data-root", str(data_root), "--workers", "0",
              "--batch-size", "4", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "one"), "--no-cache"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port),
                          "-m", "clipshift.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(2 processes)" in run.stdout
    one = pd.read_csv(tmp_path / "one" / "results.csv")
    two = pd.read_csv(tmp_path / "two" / "results.csv")
    key = ["model", "dataset", "metric"]
    merged = one.merge(two, on=key, suffixes=("_1", "_2"))
    assert len(merged) == len(one) == 6
    assert np.allclose(merged["value_1"], merged["value_2"], atol=1e-6)
    assert (merged["num_examples_1"] == merged["num_examples_2"]).all()
    assert (merged["images_skipped_1"] == merged["images_skipped_2"]).all()
    assert len(list((tmp_path / "two" / "cache" / "features").glob("*.safetensors"))) == 2  # rank 0 wrote it


# --- cache misses: whatever changes what the cache holds must not be read back from it ---------------------------

def _encode(model, suite, cache):
    return real.encode_suite(model, suite, cache_dir=cache, batch_size=4, workers=0, progress=False)


def _small_suite(root: Path, seed: int):
    """imagenet-r with 3 wnids x 2 images under `root` (created or overwritten)."""
    rng = np.random.default_rng(seed)
    for wnid in WNIDS[1:4]:
        write_jpegs(root / "imagenet-r" / wnid, 2, rng, ".jpg")
    return open_suite("imagenet-r", data_root=root)


def test_feature_cache_misses_for_other_weights_images_samples_and_transform(weights, tmp_path):
    cache, root = tmp_path / "cache", tmp_path / "data"
    model = load_model("clipshift-tiny", str(weights["clip"]))
    suite = _small_suite(root, seed=1)
    first = _encode(model, suite, cache)
    assert not first.cached and _encode(model, suite, cache).cached  # the reuse the misses are measured against

    def fresh(m, s):  # what the cache must give: the features computed without it
        result = _encode(m, s, cache)
        assert not result.cached and torch.equal(result.features, _encode(m, s, None).features)
        assert not torch.equal(result.features, first.features)  # and it is not what the cache held
        return result

    # other weights in the same file (same path and name, new content)
    other_weights = tmp_path / "tiny_clip.pt"
    torch.manual_seed(1)
    torch.save(open_clip.create_model("clipshift-tiny").state_dict(), other_weights)
    fresh(load_model("clipshift-tiny", str(other_weights)), suite)
    # other images under the same file names
    changed = _small_suite(root, seed=2)
    assert [p for p, _ in changed.samples] == [p for p, _ in suite.samples]
    fresh(model, changed)
    # another sample list: one image fewer
    (root / "imagenet-r" / WNIDS[1] / "img_1.jpg").unlink()
    fewer = fresh(model, open_suite("imagenet-r", data_root=root))
    assert len(fewer.features) == 5
    # another transform (every image mirrored first), with the id a loader gives it
    from torchvision import transforms

    mirrored = load_model("clipshift-tiny", str(weights["clip"]))
    mirrored.preprocess = transforms.Compose([transforms.RandomHorizontalFlip(p=1.0), mirrored.preprocess])
    mirrored.preprocess_id = " ".join(repr(mirrored.preprocess).split())
    fresh(mirrored, open_suite("imagenet-r", data_root=root))


def test_zero_shot_head_cache_misses_for_other_templates_and_class_names(weights, tmp_path):
    cache = tmp_path / "cache"
    model = load_model("clipshift-tiny", str(weights["clip"]))
    names, templates = ["goldfish", "tench", "shark"], ["a photo of a {}.", "a {}."]

    def head(class_names, prompts, cache_dir=cache):
        return real.zero_shot_head(model, class_names, prompts, cache_dir=cache_dir, progress=False)

    first = head(names, templates)
    assert torch.equal(head(names, templates), first)
    for other_names, other_templates in ((names, ["an image of a {}."]), (names, templates[:1]),
                                         (["goldfish", "tench", "whale"], templates),
                                         (["tench", "goldfish", "shark"], templates)):
        got = head(other_names, other_templates)
        assert torch.equal(got, head(other_names, other_templates, None))  # as computed without the cache
        assert not torch.equal(got, first)


def test_torchrun_clip_zero_shot_gives_the_one_process_results(tmp_path, free_port):
    """Zero-shot evaluation of a clipshift CLIP checkpoint under torchrun (2 CPU processes, gloo): every
    rank builds the head, each encodes every other image; results.csv is that of one process."""
    from clipshift.models.factory import ModelSpec, build_model, save_checkpoint
    from clipshift.world.shapes import CLASS_NAMES

    rng = np.random.default_rng(3)
    for split in ("test", "sketch"):
        for c, name in enumerate(CLASS_NAMES):  # 3 images a class, one more in test: 37, shards of 19 and 18
            folder = tmp_path / "world" / split / name
            folder.mkdir(parents=True)
            for i in range(4 if split == "test" and c == 0 else 3):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    spec = ModelSpec("clip", "clipshift-tiny", list(CLASS_NAMES))
    save_checkpoint(build_model(spec, seed=0), spec, tmp_path / "clip")
    common = ["eval", "--model", str(tmp_path / "clip"), "--world", str(tmp_path / "world"), "--workers", "0",
              "--batch-size", "5", "--quiet", "--no-cache"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port),
                          "-m", "clipshift.cli", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(2 processes)" in run.stdout
    one, two = (pd.read_csv(tmp_path / n / "results.csv").sort_values(["dataset", "metric"], ignore_index=True)
                for n in ("one", "two"))
    assert len(one) == 6 and set(one["kind"]) == {"clip"}
    assert dict(zip(one["dataset"], one["num_examples"])) == {"sketch": 36, "test": 37}
    assert np.allclose(one["value"], two["value"], atol=1e-6)
    pd.testing.assert_frame_equal(one.drop(columns="value"), two.drop(columns="value"))
