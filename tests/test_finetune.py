"""Fine-tuning CLIP (full, linear probe, LP-FT) and WiSE-FT: exact endpoints, the zero-shot-initialised
head, the linear probe, checkpoint compatibility, `clipshift finetune` end to end with exact resume."""

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from clipshift.cli import main
from clipshift.evaluate.heads import ZeroShotHead, zero_shot_weights
from clipshift.evaluate.loop import top1_accuracy
from clipshift.models.interface import EvalModel
from clipshift.models.factory import (ModelSpec, build_model, get_tokenizer, load_checkpoint, normalize_images,
                                      save_checkpoint)
from clipshift.models.load import load_model
from clipshift.models.wise import interpolate_weights
from clipshift.recipes.finetune import ProbeSettings, fit_probe_head, init_from_zero_shot, load_clip
from clipshift.train.loop import TrainConfig, TrainData, latest_checkpoint, train

from kill_helpers import kill_after_first_checkpoint
from resume_helpers import where_resumed
from clipshift.world.captions import ZERO_SHOT_TEMPLATES
from clipshift.world.distributions import get_distribution
from clipshift.world.export import export_caption_csv, export_imagefolder
from clipshift.world.generate import generate_split
from clipshift.world.shapes import CLASS_NAMES

ARCH = "clipshift-tiny"
EVAL_SETS = {"test": "narrow", "v2": "v2", "sketch": "sketch", "rendition": "rendition"}  # no baseline on the last


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A tiny exported world: a labelled training CSV and three evaluation ImageFolders."""
    root = tmp_path_factory.mktemp("world")
    train_split = generate_split(get_distribution("narrow"), 96, split="train_narrow", seed=0, progress=False)
    export_caption_csv(train_split, root)
    for name, dist in EVAL_SETS.items():
        export_imagefolder(generate_split(get_distribution(dist), 48, split=name, seed=1, progress=False), root)
    return root


@pytest.fixture(scope="module")
def clip():
    return build_model(ModelSpec("clip", ARCH, list(CLASS_NAMES)), seed=0).eval()


def _zero_shot(clip):
    spec = ModelSpec("zsclassifier", ARCH, list(CLASS_NAMES))
    return init_from_zero_shot(clip, get_tokenizer(ARCH), spec, list(ZERO_SHOT_TEMPLATES)), spec


def _images(n: int = 96, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    split = generate_split(get_distribution("diverse"), n, split="probe", seed=seed, progress=False)
    return torch.tensor(split.images).permute(0, 3, 1, 2).contiguous(), torch.tensor(split.labels).long()


@torch.inference_mode()
def _logits(model, images: torch.Tensor) -> torch.Tensor:
    return model.eval()(normalize_images(images))


def test_zero_shot_initialised_head_gives_the_zero_shot_predictions(clip):
    model, _ = _zero_shot(clip)
    images, labels = _images()
    wrapped = EvalModel.wrap(clip, "clip", tokenizer=get_tokenizer(ARCH))
    weights = zero_shot_weights(wrapped, CLASS_NAMES, ZERO_SHOT_TEMPLATES)
    with torch.no_grad():
        reference = ZeroShotHead(weights)(wrapped.encode_image(images))
    logits = _logits(model, images)
    assert torch.allclose(logits, clip.logit_scale.exp() * reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits.argmax(1), reference.argmax(1))
    assert top1_accuracy(logits, labels) == top1_accuracy(reference, labels)


def test_open_clip_weights_file_keeps_its_pixel_statistics(tmp_path):
    """An open_clip architecture with a local weights file: its own mean/std are applied inside the
    classifier, so step 0 is the zero-shot model under open_clip's preprocessing, before and after a
    checkpoint round trip."""
    import open_clip

    torch.save(build_model(ModelSpec("clip", ARCH, ["x"]), seed=1).state_dict(), tmp_path / "weights.pt")
    start = load_clip(ARCH, str(tmp_path / "weights.pt"))
    assert start.pixel_mean == tuple(open_clip.OPENAI_DATASET_MEAN) and start.image_size == 32
    spec = ModelSpec("zsclassifier", ARCH, list(CLASS_NAMES),
                     metadata={"pixel_mean": list(start.pixel_mean), "pixel_std": list(start.pixel_std)})
    model = init_from_zero_shot(start.clip, start.tokenizer, spec, list(ZERO_SHOT_TEMPLATES))
    images, _ = _images(32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (start.pixel_mean, start.pixel_std))
    with torch.inference_mode():
        features = start.clip.encode_image((images / 255.0 - mean) / std)
    weights = zero_shot_weights(EvalModel.wrap(start.clip, "clip", tokenizer=start.tokenizer), CLASS_NAMES,
                                ZERO_SHOT_TEMPLATES)
    reference = start.clip.logit_scale.exp() * ZeroShotHead(weights)(features)
    assert torch.allclose(_logits(model, images), reference, rtol=1e-4, atol=1e-4)
    save_checkpoint(model, spec, tmp_path / "zs")
    assert torch.equal(_logits(load_checkpoint(tmp_path / "zs")[0], images), _logits(model, images))


def test_wise_ft_endpoints_are_exactly_the_zero_shot_and_the_fine_tuned_models(clip):
    zero_shot, _ = _zero_shot(clip)
    fine_tuned = copy.deepcopy(zero_shot)
    images, labels = _images()
    train(fine_tuned, TrainData(images, labels=labels), TrainConfig("finetune", epochs=2, batch_size=32, lr=1e-3,
                                                                   warmup_steps=2), progress=False)
    theta_0, theta_1 = zero_shot.state_dict(), fine_tuned.state_dict()
    assert not torch.equal(theta_0["head.weight"], theta_1["head.weight"])
    assert theta_0["visual.trunk.stem.1.num_batches_tracked"] != theta_1["visual.trunk.stem.1.num_batches_tracked"]
    model = copy.deepcopy(zero_shot)
    for alpha, reference in ((0.0, zero_shot), (1.0, fine_tuned)):
        mixed = interpolate_weights(theta_0, theta_1, alpha)
        expected = reference.state_dict()
        assert all(torch.equal(mixed[k], expected[k]) for k in expected)
        model.load_state_dict(mixed)
        assert torch.equal(_logits(model, images), _logits(reference, images))
    halfway = interpolate_weights(theta_0, theta_1, 0.5)["head.weight"]
    assert torch.allclose(halfway, (theta_0["head.weight"] + theta_1["head.weight"]) / 2, atol=1e-6)


def test_interpolating_incompatible_checkpoints_is_a_clear_error():
    a = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"different keys.*only in the fine-tuned model: extra"):
        interpolate_weights(a, {**a, "extra": torch.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match=r"differ in shape: w \(2, 3\) vs \(3, 2\)"):
        interpolate_weights(a, {**a, "w": torch.zeros(3, 2)}, 0.5)
    with pytest.raises(ValueError, match="alpha must be a number in"):
        interpolate_weights(a, a, 1.5)
    tiny = build_model(ModelSpec("zsclassifier", "clipshift-tiny", list(CLASS_NAMES))).state_dict()
    small = build_model(ModelSpec("zsclassifier", "clipshift-small", list(CLASS_NAMES))).state_dict()
    with pytest.raises(ValueError, match="cannot interpolate"):
        interpolate_weights(tiny, small, 0.5)


def test_linear_probe_on_linearly_separable_features_reaches_100_percent():
    generator = torch.Generator().manual_seed(0)
    centres = torch.eye(12, 32) * 4  # one direction per class, well apart on the sphere
    labels = torch.arange(12).repeat(20)
    features = centres[labels] + 0.3 * torch.randn(len(labels), 32, generator=generator)
    init = (torch.zeros(12, 32), torch.zeros(12))
    settings = ProbeSettings(weight_decay=[1e-6, 1e-3], max_iter=100)
    weight, bias, summary = fit_probe_head(features, labels, 12, settings, init)
    predictions = (torch.nn.functional.normalize(features, dim=-1) @ weight.T + bias).argmax(1)
    assert torch.equal(predictions, labels) and summary["train_accuracy"] == 1.0
    assert set(summary["held_out_accuracy"]) == {1e-6, 1e-3}


def _setup(tmp_path: Path, world: Path, clip) -> Path:
    """A CLIP checkpoint, a tiny baseline table and a finetune config in `tmp_path`."""
    save_checkpoint(clip, ModelSpec("clip", ARCH, list(CLASS_NAMES)), tmp_path / "clip")
    rows = [dict(model=f"base{i}", dataset=d, metric="top1", value=v, num_examples=48, group="baseline")
            for i, accs in enumerate([(0.3, 0.2, 0.1), (0.5, 0.35, 0.15), (0.7, 0.5, 0.25)])  # test, v2, sketch
            for d, v in zip(EVAL_SETS, accs)]
    pd.DataFrame(rows).to_csv(tmp_path / "baseline.csv", index=False)
    config = {"out": str(tmp_path / "run"), "model": str(tmp_path / "clip"), "modes": ["full", "linear-probe"],
              "sources": [{"type": "csv", "path": str(world / "train_narrow.csv")}], "eval_root": str(world),
              "eval_sets": list(EVAL_SETS), "baseline": str(tmp_path / "baseline.csv"), "alphas": [0, 0.5, 1],
              "probe": {"weight_decay": 1e-4, "max_iter": 50}, "bootstrap": 100,
              "requires": "make the tiny world first",
              "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 2}}
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_finetune_recipe_end_to_end_with_exact_resume(tmp_path, world, clip, capsys):
    config = _setup(tmp_path, world, clip)
    run = tmp_path / "run"
    assert main(["finetune", str(config), "--quiet", "train.log_every=1"]) == 0
    wise = pd.read_csv(run / "wise.csv")
    assert list(wise["alpha"]) == [0.0, 0.5, 1.0] and list(wise["model"]) == ["zeroshot", "wiseft_a0.5", "full"]
    assert wise["best"].sum() == 1
    results = pd.read_csv(run / "results.csv")
    assert set(results["model"]) == {"zeroshot", "full", "linear_probe", "wiseft_a0.5", "base0", "base1", "base2"}
    assert main(["er", "--results", str(run / "results.csv"), "--id-dataset", "test", "--out", str(tmp_path / "er"),
                 "--bootstrap", "50"]) == 0
    assert (run / "figures" / "wise_average.png").stat().st_size > 10_000
    report = (run / "report.md").read_text()
    zs = wise.iloc[0]
    assert f"ID accuracy {100 * zs['id_accuracy']:.1f}%" in report and "**WiSE-FT**" in report
    assert "no ER on `rendition`" in report and set(results["dataset"]) == set(EVAL_SETS)
    assert (run / "report.html").is_file() and (run / "facts.json").is_file()
    model = load_model(str(run / "checkpoints" / "full"))  # read like any other run's model
    assert model.kind == "classifier" and model.class_names == list(CLASS_NAMES)

    # resume: make the run look killed after its first checkpoint, then continue it exactly
    finished = load_file(str(run / "checkpoints" / "full" / "model.safetensors"))
    state = run / "train_state" / "full"
    steps = sorted(p.name for p in state.glob("step-*"))
    assert len(steps) == 2
    shutil.rmtree(state / steps[-1])
    (state / "latest").write_text(steps[0] + "\n")
    assert latest_checkpoint(state).name == steps[0] == "step-0000004"  # of 2 epochs x 3 steps
    assert main(["finetune", str(config), "--quiet", "--resume", "train.log_every=1"]) == 0
    assert where_resumed(run / "metrics.jsonl", "full") == (4, [5, 6], [2])  # from step 4, not from 0
    resumed = load_file(str(run / "checkpoints" / "full" / "model.safetensors"))
    assert finished.keys() == resumed.keys() and all(torch.equal(finished[k], resumed[k]) for k in finished)


def test_bad_configurations_exit_with_code_2(tmp_path, world, clip, capsys):
    config = _setup(tmp_path, world, clip)
    assert main(["finetune", str(config), "--quiet", "modes=[full,frozen]"]) == 2
    assert "modes" in capsys.readouterr().err
    assert main(["finetune", str(config), "--quiet", "alphas=[0,1.5]"]) == 2
    assert "alphas" in capsys.readouterr().err
    assert main(["finetune", str(config), "--quiet", f"model={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "make the tiny world first" in err
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(warmup_steps=-1).validate()


def _step_losses(run: Path) -> dict[str, list[float]]:
    """Per-step training losses in metrics.jsonl, by model name (train.log_every=1)."""
    out: dict[str, list[float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "step" in record and "epoch" not in record:  # epoch records carry the step count too
            out.setdefault(record["run"], []).append(record["loss"])
    return out


def test_lp_ft_starts_from_the_linear_probe_head(tmp_path, world, clip):
    """LP-FT (Kumar et al. 2022): the probe is fitted on the frozen tower, then everything is fine-tuned
    from the probed head. Same seed, data order and augmentations as `full`, which starts from the
    zero-shot head: so LP-FT's first loss is lower, its tower moves, and its head stays near the probe's.

    The probe is fitted on features in eval mode, training runs in train mode (batch-norm on batch
    statistics): the two agree for a tower whose running statistics match the data, as a trained
    tower's do, not for a fresh one (there LP-FT's first loss was 3.8 against full's 2.9 on one
    batch). So the tower's statistics are first estimated on the training images."""
    calibrated = copy.deepcopy(clip).train()
    images = torch.stack([torch.tensor(np.array(Image.open(p))).permute(2, 0, 1)
                          for p in sorted((world / "train_narrow").glob("*.png"))])
    with torch.no_grad():
        for _ in range(30):  # running mean and variance, momentum 0.1: converged
            calibrated.encode_image(normalize_images(images))
    config = _setup(tmp_path, world, calibrated.eval())
    assert main(["finetune", str(config), "--quiet", "modes=[lp-ft,full,linear-probe]", "alphas=[0,1]",
                 "train.log_every=1", "train.epochs=1", "train.checkpoint_every=0"]) == 0
    run = tmp_path / "run"
    losses = _step_losses(run)
    assert set(losses) == {"lp_ft", "full"} and len(losses["lp_ft"]) == len(losses["full"]) == 3  # 96 images / 32
    assert losses["lp_ft"][0] < losses["full"][0] - 0.1, losses  # the probed head fits the training data

    state = {name: load_file(str(run / "checkpoints" / name / "model.safetensors"))
             for name in ("zeroshot", "linear_probe", "lp_ft", "full")}
    tower = [k for k in state["zeroshot"] if k.startswith("visual.") and state["zeroshot"][k].is_floating_point()]
    assert all(torch.equal(state["linear_probe"][k], state["zeroshot"][k]) for k in tower)  # the probe's tower is frozen
    assert any(not torch.equal(state["lp_ft"][k], state["zeroshot"][k]) for k in tower)  # LP-FT trains it
    assert not torch.equal(state["lp_ft"]["head.weight"], state["full"]["head.weight"])

    def distance(a, b):
        return (state[a]["head.weight"] - state[b]["head.weight"]).norm().item()

    assert distance("lp_ft", "linear_probe") < distance("lp_ft", "zeroshot")
    assert distance("full", "zeroshot") < distance("full", "linear_probe")
    wise = pd.read_csv(run / "wise.csv")
    assert list(wise["model"]) == ["zeroshot", "lp_ft"]  # the first mode listed is WiSE-FT's endpoint
    results = pd.read_csv(run / "results.csv")
    assert set(results.loc[results["model"] == "lp_ft", "group"]) == {"LP-FT"}


@pytest.mark.slow  # faster: the resume test above (checkpoint removed) and the SIGKILL test of `clipshift train`
def test_finetune_killed_after_its_first_checkpoint_resumes_to_the_same_result(tmp_path, world, clip):
    """`clipshift finetune` SIGKILLed once its first training checkpoint is on disk, then run again with
    --resume: the fine-tuned weights, results.csv and wise.csv equal those of an uninterrupted run."""
    config = _setup(tmp_path, world, clip)
    settings = ["modes=[full]", "alphas=[0,0.5,1]", "train.epochs=4", "train.checkpoint_every=2", "bootstrap=20",
                "train.log_every=1"]
    assert main(["finetune", str(config), "--quiet", *settings, f"out={tmp_path / 'whole'}"]) == 0
    broken = tmp_path / "broken"
    killed_at = kill_after_first_checkpoint(["finetune", str(config), "--quiet", *settings, f"out={broken}"],
                                            broken / "train_state" / "full")
    at = int(killed_at.name.split("-")[1])
    assert at < 4 * 3 and not (broken / "checkpoints" / "full").exists()

    assert main(["finetune", str(config), "--quiet", "--resume", *settings, f"out={broken}"]) == 0
    assert where_resumed(broken / "metrics.jsonl", "full") == (at, list(range(at + 1, 13)), list(range(at // 3 + 1, 5)))
    a, b = (load_file(str(run / "checkpoints" / "full" / "model.safetensors")) for run in (tmp_path / "whole", broken))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for table in ("results.csv", "wise.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "whole" / table), pd.read_csv(broken / table))
