"""The training engine: exact resume after SIGKILL, torchrun = one process, gradient accumulation,
NaN stop, data sources and mixtures, SimCLR then fine-tuning, `clipshift train`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from clipshift.cli import main
from clipshift.models.factory import ModelSpec, build_model, load_checkpoint
from clipshift.recipes.common.training import build_training_data, load_train_config, read_imagenet_captions
from clipshift.train import objectives
from clipshift.train.loop import TrainConfig, TrainData, TrainingDiverged, latest_checkpoint, train

from kill_helpers import kill_after_first_checkpoint
from resume_helpers import where_resumed


def _config(tmp_path: Path, name: str, **changes) -> Path:
    values = {"out": str(tmp_path / name), "architecture": "clipshift-vit-tiny", "objective": "supervised",
              "labels": "source", "sources": [{"type": "world", "distribution": "narrow", "size": 192}],
              "train": {"epochs": 2, "batch_size": 32, "lr": 0.002, "log_every": 1}}
    for key, value in changes.items():
        if key == "train":
            values["train"].update(value)
        else:
            values[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _losses(run: Path) -> list[float]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if "loss" in r and "epoch" not in r]


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_resume_after_sigkill_ends_with_the_same_weights(tmp_path):
    # 8 epochs of 3 steps, a checkpoint every 2: the kill comes with most of the run still to go
    changes = {"objective": "contrastive", "labels": "text_match", "architecture": "clipshift-tiny-bow",
               "sources": [{"type": "world", "distribution": "narrow", "size": 96}],
               "train": {"epochs": 8, "batch_size": 32, "checkpoint_every": 2, "log_every": 1}}
    whole = _config(tmp_path, "whole", **changes)
    assert main(["train", str(whole), "--quiet"]) == 0
    broken = _config(tmp_path, "broken", **changes)
    killed_at = kill_after_first_checkpoint(["train", str(broken), "--quiet"], tmp_path / "broken" / "checkpoints")
    assert not (tmp_path / "broken" / "model").exists()  # it did not finish
    total_steps = 8 * (96 // 32)
    at = int(killed_at.name.split("-")[1])
    assert at < total_steps
    assert main(["train", str(broken), "--quiet", "--resume"]) == 0
    # it went on from the checkpoint's step, not from 0: the steps after it, once each, and their epochs
    assert where_resumed(tmp_path / "broken" / "metrics.jsonl", "contrastive") == \
        (at, list(range(at + 1, total_steps + 1)), list(range(at // 3 + 1, 9)))
    a, b = _weights(tmp_path / "whole" / "model"), _weights(tmp_path / "broken" / "model")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# slow: (supervised, 1) is covered by (contrastive, 1), the same DDP loop, and (supervised, 2), the same objective
@pytest.mark.parametrize("objective,grad_accum", [pytest.param("supervised", 1, marks=pytest.mark.slow),
                                                  ("contrastive", 1), ("supervised", 2)])
def test_torchrun_two_processes_follow_the_one_process_loss_curve(tmp_path, objective, grad_accum, free_port):
    changes = {"objective": objective, "labels": "source" if objective == "supervised" else "text_match",
               "train": {"epochs": 2, "batch_size": 32, "grad_accum": grad_accum}}
    one = _config(tmp_path, "one", **changes)
    assert main(["train", str(one), "--quiet"]) == 0
    two = _config(tmp_path, "two", **changes)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_addr", "127.0.0.1", "--master_port", str(free_port),
                          "-m", "clipshift.cli", "train", str(two), "--quiet"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 12
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5), (a, b)
    wa, wb = _weights(tmp_path / "one" / "model"), _weights(tmp_path / "two" / "model")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-3


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    runs = {}
    for accum in (1, 2):
        path = _config(tmp_path, f"accum{accum}", train={"epochs": 1, "batch_size": 32, "grad_accum": accum})
        assert main(["train", str(path), "--quiet"]) == 0
        runs[accum] = _losses(tmp_path / f"accum{accum}")
    assert np.allclose(runs[1], runs[2], rtol=1e-4, atol=1e-5)


def test_nan_loss_stops_with_the_last_good_checkpoint(tmp_path, monkeypatch):
    class NanAtFive(objectives.Supervised):
        calls = 0

        def loss(self, model, batch, generator=None):
            NanAtFive.calls += 1
            value = super().loss(model, batch)
            return value * float("nan") if NanAtFive.calls == 5 else value

    monkeypatch.setitem(objectives.OBJECTIVES, "supervised", NanAtFive)
    spec = ModelSpec("classifier", "clipshift-tiny", ["a", "b"])
    model = build_model(spec, seed=0)
    data = TrainData(torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8), labels=torch.arange(64) % 2)
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5 .* the last good checkpoint is "
                                               r".*step-0000004"):
        train(model, data, TrainConfig("supervised", epochs=3, batch_size=8, checkpoint_every=2), progress=False,
              checkpoint_dir=folder, spec=spec)
    assert latest_checkpoint(folder).name == "step-0000004"
    state = torch.load(latest_checkpoint(folder) / "state.pt", weights_only=True)  # nothing unpickled
    assert state["step"] == 4


def test_train_resumes_from_the_checkpoint_step_and_says_so(tmp_path, capsys):
    """`train(resume=True)` runs only the steps after the checkpoint's (counted by `on_step`), logs a
    resume record with that step and says it on stderr; with no checkpoint it starts at step 0, silently."""
    spec = ModelSpec("classifier", "clipshift-tiny", ["a", "b"])
    data = TrainData(torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8), labels=torch.arange(32) % 2)
    config = TrainConfig("supervised", epochs=2, batch_size=8, checkpoint_every=3, log_every=1)  # 8 steps
    folder, log = tmp_path / "ckpt", tmp_path / "metrics.jsonl"

    def run(resume):
        steps = []
        history = train(build_model(spec, seed=0), data, config, progress=False, checkpoint_dir=folder, spec=spec,
                        log_path=log, resume=resume, on_step=lambda step, model: steps.append(step))
        return steps, history

    assert run(resume=True)[0] == list(range(1, 9)) and "resumed" not in capsys.readouterr().err  # nothing to resume
    (folder / "step-0000008").rename(folder / "gone")  # as if killed after the checkpoint of step 6
    (folder / "latest").write_text("step-0000006\n")
    steps, history = run(resume=True)
    assert steps == [7, 8] and [r["epoch"] for r in history] == [1, 2]  # epoch 1 from the checkpoint's history
    assert where_resumed(log, "train") == (6, [7, 8], [2])
    assert "train: resumed from step 6 of 8 (step-0000006)" in capsys.readouterr().err


def _write_images(folder: Path, n: int, rng) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_sources_csv_imagenet_captions_and_mixture(tmp_path):
    rng = np.random.default_rng(0)
    paths = _write_images(tmp_path / "csv", 6, rng)
    rows = ["path\ttext"] + [f"{p.name}\ta red {'star' if i % 2 else 'circle'} on grass" for i, p in enumerate(paths)]
    (tmp_path / "csv" / "train.tsv").write_text("\n".join(rows) + "\n")
    wnids = ["n01440764", "n01443537"]
    entries = []
    for w in wnids:
        for i, p in enumerate(_write_images(tmp_path / "train" / w, 2, rng)):
            entries.append({"filename": p.name, "wnid": w, "title": f"my fish {i}" if i else "",
                            "description": "" if i else "a tench", "tags": ["lake", "fishing"]})
    entries.append({"filename": "x.png", "wnid": wnids[0], "title": "", "description": "", "tags": []})
    (tmp_path / "ic.json").write_text(json.dumps(entries))
    found, captions, labels = read_imagenet_captions(tmp_path / "ic.json", tmp_path / "train")
    assert len(found) == 4 and captions[0] == "a tench. lake fishing" and captions[1] == "my fish 1. lake fishing"
    only_title = read_imagenet_captions(tmp_path / "ic.json", tmp_path / "train", ("title",))[1]
    assert only_title == ["my fish 1", "my fish 1"]

    config = load_train_config(overrides={
        "out": str(tmp_path / "run"), "objective": "supervised", "labels": "text_match", "samples": 40,
        "sources": [{"type": "csv", "path": str(tmp_path / "csv" / "train.tsv"), "filepath_column": "path",
                     "caption_column": "text", "weight": 3},
                    {"type": "world", "distribution": "diverse", "size": 50, "weight": 1}]})
    data, summary = build_training_data(config, tokenizer=None, progress=False)
    assert summary["images_per_source"] == [30, 10] and summary["images"] == 40
    assert len(data) == (data.labels >= 0).sum() and data.images.shape[1:] == (3, 32, 32)
    assert 0.5 < summary["text_match_rate"] <= 1
    with pytest.raises(ValueError, match=r"sources\[0\] \(world\): unknown keys \['colour'\]"):
        load_train_config(overrides={"sources": [{"type": "world", "colour": "red"}]})
    with pytest.raises(ValueError, match=r"train: unknown keys \['epoch'\]"):
        load_train_config(overrides={"train.epoch": 3})
    with pytest.raises(FileNotFoundError, match=r"ImageNet-Captions images are not under"):
        read_imagenet_captions(tmp_path / "ic.json", tmp_path / "csv")


def test_simclr_then_finetune_on_text_matched_labels(tmp_path):
    pre = _config(tmp_path, "simclr", objective="simclr", architecture="clipshift-tiny",
                  train={"epochs": 2, "batch_size": 32})
    assert main(["train", str(pre), "--quiet"]) == 0
    losses = _losses(tmp_path / "simclr")
    assert all(np.isfinite(losses)) and len(losses) == 12
    simclr, spec = load_checkpoint(tmp_path / "simclr" / "model")
    assert spec.kind == "simclr"
    tune = _config(tmp_path, "tune", objective="finetune", architecture="clipshift-tiny", labels="text_match",
                   init_from=str(tmp_path / "simclr" / "model"), train={"epochs": 0 + 1, "batch_size": 32, "lr": 1e-9})
    assert main(["train", str(tune), "--quiet"]) == 0
    tuned, tuned_spec = load_checkpoint(tmp_path / "tune" / "model")
    assert tuned_spec.kind == "classifier"
    # at a vanishing learning rate the fine-tuned tower is still the SimCLR one (its weights, not a fresh init;
    # BatchNorm running statistics move with any forward pass, so parameters only)
    tuned_params = dict(tuned.visual.named_parameters())
    for key, value in simclr.visual.named_parameters():
        assert torch.allclose(value, tuned_params[key], atol=1e-4), key
    fresh = build_model(ModelSpec("classifier", "clipshift-tiny", ["a"]), seed=0)
    assert not torch.allclose(dict(fresh.visual.named_parameters())["trunk.stem.0.weight"],
                              tuned_params["trunk.stem.0.weight"])
    assert main(["train", str(_config(tmp_path, "bad", objective="finetune")), "--quiet"]) == 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from clipshift.data.shards import write_shards
    from clipshift.world.distributions import get_distribution
    from clipshift.world.generate import generate_split

    folder = tmp_path_factory.mktemp("shards")
    patterns = {}
    for name in ("narrow", "sketch"):
        split = generate_split(get_distribution(name), 120, split="train", seed=3, size=32, progress=False)
        patterns[name] = write_shards(split.images, split.captions, folder / name, labels=split.labels, per_shard=50)
    return patterns


def test_shard_stream_is_seeded_mixed_by_weight_and_skippable(shards):
    from clipshift.data.shards import ShardStream, expand_shards

    assert len(expand_shards(shards["narrow"])) == 3  # 120 samples, 50 per shard
    a = ShardStream([shards["narrow"], shards["sketch"]], [3, 1], seed=1, buffer=40)
    b = ShardStream([shards["narrow"], shards["sketch"]], [3, 1], seed=1, buffer=40)
    first = a.next_batch(400)
    assert [s["__key__"] for s in first] == [s["__key__"] for s in b.next_batch(400)]
    share = np.mean([s["__source__"] == 0 for s in first])
    assert 0.68 < share < 0.82  # 3:1 mixture
    keys = [s["__key__"] for s in first if s["__source__"] == 0][:120]
    assert len(set(keys)) > 100  # the buffer and shard shuffling do not repeat a few samples
    c = ShardStream([shards["narrow"], shards["sketch"]], [3, 1], seed=1, buffer=40)
    c.skip(250)
    assert [s["__key__"] for s in c.next_batch(150)] == [s["__key__"] for s in first[250:400]]
    with pytest.raises(FileNotFoundError, match=r"shards of .* not found"):
        ShardStream([shards["narrow"].replace("00000", "00009")])


def test_streamed_training_resumes_exactly(tmp_path, shards):
    import shutil

    changes = {"objective": "supervised", "labels": "text_match", "samples": 96,
               "sources": [{"type": "webdataset", "urls": shards["narrow"], "weight": 2, "buffer": 30},
                           {"type": "webdataset", "urls": shards["sketch"], "weight": 1}],
               "train": {"epochs": 3, "batch_size": 16, "checkpoint_every": 5}}
    whole = _config(tmp_path, "whole", **changes)
    assert main(["train", str(whole), "--quiet"]) == 0
    assert len(_losses(tmp_path / "whole")) == 18  # 96 // 16 steps per epoch, 3 epochs
    part = _config(tmp_path, "part", **changes)
    (tmp_path / "part" / "checkpoints").mkdir(parents=True)
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "step-0000015", tmp_path / "part" / "checkpoints" / "step-0000015")
    (tmp_path / "part" / "checkpoints" / "latest").write_text("step-0000015\n")
    assert main(["train", str(part), "--quiet", "--resume"]) == 0  # fast-forwards the stream by 15 batches
    assert where_resumed(tmp_path / "part" / "metrics.jsonl", "supervised") == (15, [16, 17, 18], [3])
    a, b = _weights(tmp_path / "whole" / "model"), _weights(tmp_path / "part" / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    bad = _config(tmp_path, "bad", sources=[{"type": "webdataset", "urls": shards["narrow"]}])
    assert main(["train", str(bad), "--quiet"]) == 2  # no stated epoch length
