"""Training images decoded per batch (LazyImages, in_memory), batches decoded ahead (prefetch), the
decode rate of a source, and source-level subsets."""

from __future__ import annotations

import collections
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import miniature_real as mini
from clipshift.cli import main
from clipshift.data import ImageDecodeError, LazyImages, load_images
from clipshift.data import lazy as lazy_module
from clipshift.data.lazy import THREAD_PREFIX, decode_threads, measure_decode_rate
from clipshift.data.sources import subset_indices
from clipshift.models.factory import ModelSpec, build_model
from clipshift.recipes.common import training as train_recipe
from clipshift.recipes.common.training import build_training_data, load_train_config
from clipshift.train import objectives
from clipshift.train.loop import TrainConfig, TrainData, train


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    """Ten images of different sizes and modes (RGB JPEG, grey PNG, RGBA PNG)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        shape = (20 + i, 30 - i) + ((3,) if i % 3 == 0 else (4,) if i % 3 == 1 else ())
        path = folder / f"{i}.{'jpg' if i % 3 == 0 else 'png'}"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real")
    return {"captions": mini.write_imagenet_captions(root / "ic"), "csv": mini.write_caption_csv(root / "yfcc"),
            "subset": mini.write_wnid_file(root / "two.txt", [mini.CANDLE, mini.BANANA]), "root": root}


def test_lazy_images_index_like_the_decoded_tensor(files):
    whole = load_images(files, size=16, num_workers=2, progress=False)
    lazy = LazyImages(files, 16, num_workers=2)
    assert len(lazy) == 10 and lazy.shape == whole.shape == (10, 3, 16, 16) and lazy.dtype == torch.uint8
    for index in (torch.tensor([3, 0, 9, 3]), np.array([7, 1]), [2], slice(1, 8, 3), np.arange(10) % 2 == 0,
                  torch.tensor([-1, -10])):
        expected = whole[index] if isinstance(index, slice) else whole[torch.as_tensor(index)]
        got = lazy[index]
        assert got.dtype == torch.uint8 and torch.equal(got, expected)
    assert torch.equal(lazy[4], whole[4])
    assert torch.equal(LazyImages(files, 16, num_workers=0)[torch.arange(10)], whole)
    assert torch.equal(TrainData(lazy, labels=torch.arange(10)).batch(torch.tensor([5, 6]))["images"], whole[5:7])
    with pytest.raises(IndexError, match=r"out of range for 10 images"):
        lazy[torch.tensor([10])]


def test_take_and_concat_hold_index_maps_without_decoding(files, monkeypatch):
    whole = load_images(files, size=16, progress=False)
    memory = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    decoded = []
    real_decode = lazy_module.decode_rgb
    monkeypatch.setattr(lazy_module, "decode_rgb", lambda path, size: decoded.append(path) or real_decode(path, size))
    lazy = LazyImages(files, 16, num_workers=0)
    mixed = LazyImages.concat([lazy.take(np.array([9, 8, 7])), memory, lazy.take(torch.tensor([0, 0]))])
    picked = mixed.take(np.array([True, False, True, True, False, False, True, True, True]))
    assert decoded == [] and len(picked) == 6
    assert picked.paths == [files[9], files[7], None, None, files[0], files[0]]
    assert torch.equal(picked[torch.arange(6)], torch.cat([whole[[9, 7]], memory[[0, 3]], whole[[0, 0]]]))
    assert len(decoded) == 4  # only the requested rows' files
    decoded.clear()
    monkeypatch.setattr(lazy_module, "decode_many", lambda paths, size, workers, skip_errors: (
        (i, real_decode(p, size)) for i, p in enumerate(decoded.extend(paths) or paths)))
    materialized = picked.materialize()
    assert sorted(decoded) == sorted([files[9], files[7], files[0]])  # each distinct file once
    assert torch.equal(materialized, picked[torch.arange(6)]) and "from 10 files" in repr(picked)  # one bank of paths
    clone = pickle.loads(pickle.dumps(picked))  # a used thread pool is left behind
    assert torch.equal(clone[[0, 5]], whole[[9, 0]])
    with pytest.raises(ValueError, match=r"expected uint8 \(N, 3, 16, 16\) images"):
        LazyImages.concat([lazy, torch.zeros(2, 3, 8, 8, dtype=torch.uint8)])


def test_an_undecodable_file_is_named_when_its_batch_is_taken(files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    lazy = LazyImages([*files[:2], str(broken)], 16)
    assert lazy[[0, 1]].shape == (2, 3, 16, 16)
    with pytest.raises(ImageDecodeError, match=r"cannot decode image .*broken\.jpg"):
        lazy[[1, 2]]


def _run(tmp_path: Path, name: str, **values) -> tuple[dict, dict]:
    config = {"out": str(tmp_path / name), "architecture": "clipshift-tiny-bow",
              "train": {"epochs": 1, "batch_size": 8}, **values}
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / f"{name}.yaml"), "--quiet"]) == 0
    summary = yaml.safe_load((tmp_path / name / "config.yaml").read_text())["data"]
    return load_file(str(tmp_path / name / "model" / "model.safetensors")), summary


@pytest.mark.parametrize("objective,grad_accum", [("supervised", 2), ("contrastive", 1)])
def test_in_memory_and_lazy_training_give_bit_identical_weights(real, tmp_path, objective, grad_accum):
    """In memory, lazy with batches decoded ahead (prefetch, the default) and lazy decoded when taken
    (prefetch: 0): the same weights, bit for bit (supervised: a short last batch, in micro-batches)."""
    sources = [{"type": "csv", "path": str(real["csv"]["path"]), "weight": 3},
               {"type": "world", "distribution": "diverse", "size": 20},
               {"type": "imagenet_captions", "json": str(real["captions"]["json"]),
                "root": str(real["captions"]["root"])}]
    settings = {"objective": objective, "classes": "imagenet", "samples": 60, "sources": sources, "decode_threads": 2,
                "train": {"epochs": 1, "batch_size": 8, "grad_accum": grad_accum}}
    memory, in_summary = _run(tmp_path, "memory", in_memory=True, **settings)
    lazy, lazy_summary = _run(tmp_path, "lazy", in_memory=False, **settings)
    taken, _ = _run(tmp_path, "taken", in_memory=False, prefetch=0, **settings)
    assert in_summary["in_memory"] is True and lazy_summary["in_memory"] is False
    assert in_summary["images_per_source"] == [36, 12, 12]
    for other in (lazy, taken):
        assert memory.keys() == other.keys() and all(torch.equal(memory[k], other[k]) for k in memory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# slow (two torchrun launches): the fast tests above cover prefetching in one process; this adds the rank split
@pytest.mark.slow
def test_torchrun_shards_prefetched_batches_as_in_memory_ones(real, tmp_path):
    """Two torchrun processes, each decoding its own rows of every batch ahead, end with the weights of
    two processes training on the same images in memory, bit for bit."""
    settings = {"objective": "contrastive", "classes": "imagenet", "decode_threads": 1,
                "sources": [{"type": "csv", "path": str(real["csv"]["path"])}],
                "train": {"epochs": 2, "batch_size": 8, "grad_accum": 2}}
    weights = {}
    for name, in_memory in (("memory", True), ("lazy", False)):
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({"out": str(tmp_path / name), "architecture": "clipshift-tiny-bow",
                                          "in_memory": in_memory, **settings}))
        run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                              "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                              "-m", "clipshift.cli", "train", str(config), "--quiet"],
                             capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        weights[name] = load_file(str(tmp_path / name / "model" / "model.safetensors"))
    assert yaml.safe_load((tmp_path / "lazy" / "config.yaml").read_text())["data"]["in_memory"] is False
    assert all(torch.equal(weights["memory"][k], weights["lazy"][k]) for k in weights["memory"])


def test_in_memory_auto_decodes_up_to_the_threshold(real, monkeypatch):
    values = {"objective": "simclr", "classes": "imagenet",
              "sources": [{"type": "csv", "path": str(real["csv"]["path"])}]}
    data, summary = build_training_data(load_train_config(overrides=values), None, progress=False)
    assert summary["in_memory"] is True and torch.is_tensor(data.images) and data.images.shape == (32, 3, 32, 32)
    monkeypatch.setattr(train_recipe, "IN_MEMORY_MAX_IMAGES", 31)
    data, summary = build_training_data(load_train_config(overrides=values), None, progress=False)
    assert summary["in_memory"] is False and isinstance(data.images, LazyImages) and len(data) == 32
    with pytest.raises(ValueError, match=r"in_memory: expected auto, true or false, got 'sometimes'"):
        load_train_config(overrides={**values, "in_memory": "sometimes"})


# ---- batches decoded ahead ----------------------------------------------------------------------

def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def test_prefetched_batches_are_the_ones_taken_in_order_and_bounded(files, monkeypatch):
    memory = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    mixed = LazyImages.concat([LazyImages(files, 16, num_workers=0), memory])  # rows 10..13 held in memory
    indices = [torch.tensor([3, 11, 3, 0]), np.array([13, 12]), [9, 8, 7, 6, 5, 4, 2, 1, 10], torch.tensor([5])]
    expected = [mixed[i] for i in indices]  # the synchronous path, in the calling thread
    decoded = []
    real_decode = lazy_module.decode_rgb
    monkeypatch.setattr(lazy_module, "decode_rgb", lambda path, size: decoded.append(path) or real_decode(path, size))
    with mixed.prefetched(iter(indices), prefetch=1) as batches:
        time.sleep(0.2)
        assert len(decoded) <= 3  # one batch ahead: the first one's three files at most
        got = [batches.next(i) for i in indices[:2]]
        time.sleep(0.2)
        assert len(decoded) <= 3 + 0 + 9  # the second batch has no file; the third is the one ahead
        with pytest.raises(RuntimeError, match="taken out of order"):
            batches.next(indices[3])
    assert not _decode_threads()
    with mixed.prefetched(iter(indices), prefetch=2) as batches:
        got = [batches.next(i) for i in indices]
        with pytest.raises(RuntimeError, match="exhausted"):
            batches.next()
    assert all(g.dtype == torch.uint8 and torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    assert not _decode_threads()


class _Recording(objectives.Supervised):
    """The supervised objective, keeping every micro-batch it is given."""

    batches: list = []

    def loss(self, model, batch, generator=None):
        _Recording.batches.append({k: v.clone() for k, v in batch.items()})
        return super().loss(model, batch)


def _train_tiny(images, config: TrainConfig, **kwargs) -> dict:
    spec = ModelSpec("classifier", "clipshift-tiny", ["a", "b"])
    model = build_model(spec, seed=0)
    train(model, TrainData(images, labels=torch.arange(len(images)) % 2), config, progress=False, spec=spec, **kwargs)
    return model.state_dict()


def test_the_loop_takes_the_same_batches_with_and_without_prefetch(files, monkeypatch):
    """The micro-batches the objective sees (images after augmentation, labels) and the final weights:
    in memory = lazy decoded when taken = lazy decoded 2 batches ahead (grad_accum 2, a short last batch)."""
    monkeypatch.setitem(objectives.OBJECTIVES, "supervised", _Recording)
    threads = []
    real_decode = lazy_module.decode_rgb
    monkeypatch.setattr(lazy_module, "decode_rgb",
                        lambda path, size: threads.append(threading.current_thread().name) or real_decode(path, size))
    rows = np.arange(30) % 10
    config = TrainConfig("supervised", epochs=2, batch_size=8, grad_accum=2, checkpoint_every=0)
    runs = {}
    for name, images in [("memory", load_images(files, size=32, progress=False)[torch.from_numpy(rows)]),
                         ("taken", LazyImages(files, 32, num_workers=2, prefetch=0).take(rows)),
                         ("ahead", LazyImages(files, 32, num_workers=2, prefetch=2).take(rows))]:
        _Recording.batches, threads[:] = [], []
        runs[name] = (_train_tiny(images, config), _Recording.batches)
        assert all(t.startswith(THREAD_PREFIX) == (name == "ahead") for t in threads)  # "taken": LazyImages' pool
    weights, batches = runs["memory"]
    assert len(batches) == 2 * 4 * 2 and len(batches[7]["labels"]) == 3  # 4 steps an epoch, the last of 6 rows
    for other_weights, other_batches in (runs["taken"], runs["ahead"]):
        assert len(other_batches) == len(batches)
        assert all(torch.equal(a[k], b[k]) for a, b in zip(batches, other_batches) for k in a)
        assert all(torch.equal(weights[k], other_weights[k]) for k in weights)


def test_prefetched_training_resumes_mid_epoch_exactly(files, tmp_path):
    images = LazyImages(files, 32, num_workers=2, prefetch=2).take(np.arange(40) % 10)  # 5 steps an epoch
    config = TrainConfig("supervised", epochs=2, batch_size=8, checkpoint_every=7)
    folder = tmp_path / "ckpt"
    whole = _train_tiny(images, config, checkpoint_dir=folder)
    (folder / "step-0000010").rename(tmp_path / "gone")  # as if killed after step 7, in the second epoch
    (folder / "latest").write_text("step-0000007\n")
    steps = []
    resumed = _train_tiny(images, config, checkpoint_dir=folder, resume=True, on_step=lambda s, m: steps.append(s))
    assert steps == [8, 9, 10] and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_failure_in_a_decode_thread_names_the_file_and_leaves_no_thread(files, tmp_path, monkeypatch):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    images = LazyImages([*files, str(broken)], 32, num_workers=2, prefetch=2).take(np.arange(44) % 11)
    config = TrainConfig("supervised", epochs=1, batch_size=8)
    with pytest.raises(ImageDecodeError, match=r"cannot decode image .*broken\.jpg"):
        _train_tiny(images, config)
    assert not _decode_threads()
    real_decode = lazy_module.decode_rgb

    def failing(path, size):
        if path == files[3]:
            raise RuntimeError("the disk went away")
        return real_decode(path, size)

    monkeypatch.setattr(lazy_module, "decode_rgb", failing)
    with pytest.raises(ImageDecodeError, match=r"cannot decode image .*3\.jpg: RuntimeError: the disk went away"):
        _train_tiny(LazyImages(files, 32, num_workers=2, prefetch=2).take(np.arange(40) % 10), config)
    assert not _decode_threads()


def test_an_interrupt_leaves_no_decode_thread(files):
    images = LazyImages(files, 32, num_workers=2, prefetch=3).take(np.arange(80) % 10)

    def interrupt(step, model):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train_tiny(images, TrainConfig("supervised", epochs=1, batch_size=8), on_step=interrupt)
    assert not _decode_threads()


def test_prefetch_and_decode_threads_settings(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cores = decode_threads("auto")
    assert cores >= 1 and decode_threads(3) == 3 and decode_threads(0) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))  # more processes than cores: one thread each
    assert decode_threads("auto") == 1
    assert load_train_config(overrides={"decode_threads": "auto", "prefetch": 0}).prefetch == 0
    with pytest.raises(ValueError, match=r"prefetch: expected an integer >= 0 \(batches decoded ahead\), got -1"):
        load_train_config(overrides={"prefetch": -1})
    with pytest.raises(ValueError, match=r"decode_threads: expected an integer >= 0 or auto, got 'many'"):
        load_train_config(overrides={"decode_threads": "many"})
    with pytest.raises(ValueError, match=r"expected an integer >= 0 or 'auto', got -2"):
        LazyImages(["a.jpg"], 8, num_workers=-2)


def test_measure_decode_rate_decodes_the_first_images(files, monkeypatch):
    decoded = collections.Counter()
    real_decode = lazy_module.decode_rgb
    monkeypatch.setattr(lazy_module, "decode_rgb", lambda path, size: decoded.update([path]) or real_decode(path, size))
    rate = measure_decode_rate(files, 16, max_images=6, workers=2)
    assert rate.images == 6 and rate.workers == 2 and rate.per_worker > 0 and rate.total > 0
    assert decoded == collections.Counter({path: 2 for path in files[:6]})  # all threads, then one alone
    decoded.clear()
    rate = measure_decode_rate(files, 16, max_images=100, workers=1)
    assert (rate.images, rate.workers) == (10, 1) and rate.per_worker == rate.total > 0
    assert decoded == collections.Counter(files)
    with pytest.raises(ValueError, match="at least one image file"):
        measure_decode_rate([], 16)
    with pytest.raises(ValueError, match="max_images must be a positive integer"):
        measure_decode_rate(files, 16, max_images=0)


# ---- source-level subsets ------------------------------------------------------------------------

def test_subset_indices_are_nested_for_one_seed():
    seed = [3, 1]
    small, large = subset_indices(50, 10, seed, "s"), subset_indices(50, 25, seed, "s")
    assert small.tolist() == np.sort(np.random.default_rng(seed).permutation(50)[:10]).tolist()
    assert set(small) < set(large) and len(set(large)) == 25
    assert not set(small) <= set(subset_indices(50, 25, [3, 2], "s"))  # another seed draws another subset
    assert subset_indices(7, None, 0, "s").tolist() == list(range(7))
    with pytest.raises(ValueError, match=r"where: size 8 exceeds the 7 samples of the source"):
        subset_indices(7, 8, 0, "where")


def _kept_paths(values: dict) -> tuple[list[str], dict]:
    """The files of the training set built lazily: nothing may be decoded while it is built."""
    config = load_train_config(overrides={"objective": "simclr", "in_memory": False, **values})
    with pytest.MonkeyPatch.context() as patch:
        for name in ("decode_rgb", "decode_many"):
            patch.setattr(lazy_module, name, lambda *args, **kwargs: pytest.fail("decoded while building"))
        data, summary = build_training_data(config, None, progress=False)
    return data.images.paths, summary


def test_csv_and_imagenet_captions_sources_keep_the_seeded_subset(real):
    csv = {"type": "csv", "path": str(real["csv"]["path"])}
    everything, _ = _kept_paths({"sources": [csv]})
    small, _ = _kept_paths({"sources": [{**csv, "size": 8, "subset_seed": [0, 4]}]})
    large, summary = _kept_paths({"sources": [{**csv, "size": 20, "subset_seed": [0, 4]}]})
    expected = np.sort(np.random.default_rng([0, 4]).permutation(32)[:8])
    assert small == [everything[i] for i in expected] and set(small) < set(large) and len(large) == 20
    assert summary["sources"] == [{"type": "csv", "rows": 32, "after_class_filter": 32, "kept": 20}]
    ic = {"type": "imagenet_captions", "json": str(real["captions"]["json"]), "root": str(real["captions"]["root"])}
    config = load_train_config(overrides={"objective": "supervised", "labels": "source", "classes": str(real["subset"]),
                                          "in_memory": False, "sources": [{**ic, "size": 6, "subset_seed": 5}]})
    data, summary = build_training_data(config, None, progress=False)
    assert summary["sources"][0] == {"type": "imagenet_captions", "rows": 32, "after_class_filter": 16, "kept": 6}
    of_subset = [p for p in _kept_paths({"sources": [ic]})[0] if Path(p).parent.name in (mini.CANDLE, mini.BANANA)]
    assert data.images.paths == [of_subset[i] for i in np.sort(np.random.default_rng(5).permutation(16)[:6])]
    assert data.labels.tolist() == [0 if Path(p).parent.name == mini.CANDLE else 1 for p in data.images.paths]


def test_class_filter_by_text_matching_and_by_wnid_labels(real):
    csv = {"type": "csv", "path": str(real["csv"]["path"])}
    config = load_train_config(overrides={"objective": "supervised", "classes": str(real["subset"]), "in_memory": False,
                                          "sources": [csv]})
    data, summary = build_training_data(config, None, progress=False)
    # captions naming exactly one of candle and banana: candle 5 (name, synonym, 'candle and sandal'),
    # banana 4 + 1 naming candle, wine bottle 2 (naming banana), sandal 0
    assert summary["sources"][0]["after_class_filter"] == 12 and len(data) == 12 and summary["text_match_rate"] == 1.0
    assert data.labels.tolist().count(0) == 6 and data.labels.tolist().count(1) == 6
    labelled = {"type": "csv", "path": str(real["csv"]["labelled"]), "label_column": "label"}
    config = load_train_config(overrides={"objective": "supervised", "labels": "source", "in_memory": False,
                                          "classes": str(real["subset"]), "sources": [labelled]})
    data, summary = build_training_data(config, None, progress=False)
    assert summary["sources"][0]["after_class_filter"] == 16
    assert summary["text_match_precision"] == pytest.approx(9 / 10)
    assert [Path(p).name.split("_")[0] for p in data.images.paths] == [mini.CANDLE] * 8 + [mini.BANANA] * 8
    assert data.labels.tolist() == [0] * 8 + [1] * 8


def test_world_source_pool_size_and_class_names(tmp_path):
    pool = {"type": "world", "distribution": "narrow", "pool": 40, "subset_seed": 2}
    config = load_train_config(overrides={"objective": "supervised", "labels": "source",
                                          "sources": [{**pool, "size": 10}]})
    data, summary = build_training_data(config, None, progress=False)
    whole, _ = build_training_data(load_train_config(overrides={
        "objective": "supervised", "labels": "source", "sources": [{**pool, "pool": 40}]}), None, progress=False)
    kept = np.sort(np.random.default_rng(2).permutation(40)[:10])
    assert torch.equal(data.images, whole.images[torch.from_numpy(kept)])
    assert data.labels.tolist() == (kept % 12).tolist()
    assert summary["sources"] == [{"type": "world", "rows": 40, "after_class_filter": 40, "kept": 10}]
    names = tmp_path / "shapes.txt"
    names.write_text("star\ncircle\n")  # world labels 3 and 0, in this order
    config = load_train_config(overrides={"objective": "supervised", "labels": "source", "classes": str(names),
                                          "sources": [{"type": "world", "size": 48}]})
    data, summary = build_training_data(config, None, progress=False)
    assert summary["sources"][0]["after_class_filter"] == 8 and data.labels.tolist() == [1, 0] * 4
    with pytest.raises(ValueError, match=r"sources\[0\] \(world\): size 50 exceeds pool 40"):
        load_train_config(overrides={"sources": [{**pool, "size": 50}]})
    with pytest.raises(ValueError, match=r"subset_seed must be a non-negative int or a list of them, got 'a'"):
        load_train_config(overrides={"sources": [{**pool, "subset_seed": "a"}]})
