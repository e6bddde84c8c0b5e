import math

import pytest
import timm
import torch
import torch.nn.functional as F

from clipshift.evaluate.heads import ZeroShotHead, zero_shot_weights
from clipshift.models.interface import EvalModel
from clipshift.models.factory import (ModelSpec, build_model, get_tokenizer, load_checkpoint, normalize_images,
                                      register_model_configs, save_checkpoint)
from clipshift.train.loop import TrainConfig, TrainData, augment, cosine_with_warmup, train
from clipshift.train.objectives import Contrastive

ARCHITECTURES = register_model_configs()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_every_registered_architecture_trains_both_ways(architecture):
    torch.manual_seed(0)
    images = normalize_images(torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8))
    clip = build_model(ModelSpec("clip", architecture, ["a", "b", "c"]))
    out = clip(images, get_tokenizer(architecture)(["a red star", "a disc", "x", "y"]))
    loss = Contrastive(None).clip_loss(out["image_features"], out["text_features"], out["logit_scale"])
    loss.backward()
    classifier = build_model(ModelSpec("classifier", architecture, ["a", "b", "c"]))
    logits = classifier(images)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    for model in (clip.visual, classifier):
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, missing
    # the same image tower: identical parameter names and shapes
    assert {n: p.shape for n, p in clip.visual.named_parameters()} == \
           {n: p.shape for n, p in classifier.visual.named_parameters()}


def test_timm_builds_the_towers_by_name():
    model = timm.create_model("clipshift_convnet_tiny", num_classes=5)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    model.reset_classifier(0)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, model.num_features)
    with pytest.raises(ValueError, match="no published weights"):
        timm.create_model("clipshift_convnet_tiny", pretrained=True)


def test_unknown_architecture_and_kind():
    with pytest.raises(ValueError, match="unknown architecture 'nope'"):
        build_model(ModelSpec("clip", "nope", ["a"]))
    with pytest.raises(ValueError, match="kind must be one of"):
        ModelSpec("detector", "clipshift-tiny", ["a"])


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    spec = ModelSpec("classifier", "clipshift-tiny", ["a", "b"], metadata={"name": "m"})
    model = build_model(spec).eval()
    save_checkpoint(model, spec, tmp_path / "ckpt")
    loaded, loaded_spec = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(model(x), loaded(x)) and loaded_spec == spec
    with pytest.raises(FileNotFoundError, match="missing model.json"):
        load_checkpoint(tmp_path)


def test_clip_loss_matches_the_symmetric_infonce_formula():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(10.0)
    logits = scale * img @ txt.T
    target = torch.arange(5)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert Contrastive(None).clip_loss(img, txt, scale).item() == pytest.approx(expected.item(), rel=1e-6)


def test_zero_shot_head_is_the_normalised_mean_of_normalised_prompts():
    torch.manual_seed(0)
    model = build_model(ModelSpec("clip", "clipshift-tiny", ["star", "circle"])).eval()
    tok = get_tokenizer("clipshift-tiny")
    templates = ["a {}", "my {}"]
    clip = EvalModel.wrap(model, "clip", tokenizer=tok)
    weights = zero_shot_weights(clip, ["star", "circle"], templates)
    with torch.no_grad():
        star = F.normalize(model.encode_text(tok(["a star", "my star"])), dim=-1).mean(0)
    assert torch.allclose(weights[:, 0], F.normalize(star, dim=0), atol=1e-6)
    assert torch.allclose(weights.norm(dim=0), torch.ones(2))
    with torch.no_grad():
        features = clip.encode_image(torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8))
    logits = ZeroShotHead(weights)(features)
    assert logits.abs().max() <= 1 + 1e-6  # cosine similarities
    with pytest.raises(ValueError, match="placeholder"):
        zero_shot_weights(clip, ["star"], ["no slot"])


def test_schedule_and_augmentation():
    assert cosine_with_warmup(0, 100, 10) == pytest.approx(0.1)
    assert cosine_with_warmup(10, 100, 10) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 100, 10) == pytest.approx(0.5)
    assert cosine_with_warmup(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    images = torch.randint(0, 255, (16, 3, 32, 32), dtype=torch.uint8)
    moved = augment(images, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and moved.dtype == torch.uint8
    assert set(moved.unique().tolist()) <= set(images.unique().tolist())


def test_supervised_training_learns_a_separable_task_and_is_deterministic():
    torch.manual_seed(0)
    labels = torch.arange(256) % 2
    images = torch.randint(0, 60, (256, 3, 32, 32), dtype=torch.uint8)
    images[labels == 1, 0] += 180  # class 1 is red
    config = TrainConfig("supervised", epochs=3, batch_size=32, lr=3e-3, seed=0)
    runs = []
    for _ in range(2):
        model = build_model(ModelSpec("classifier", "clipshift-tiny", ["black", "red"]), seed=0)
        history = train(model, TrainData(images, labels=labels), config, progress=False)
        runs.append([h["loss"] for h in history])
    assert runs[0] == runs[1]
    assert runs[0][-1] < 0.3 < math.log(2)
    model.eval()
    with torch.no_grad():
        accuracy = (model(normalize_images(images)).argmax(1) == labels).float().mean()
    assert accuracy > 0.95


def test_objectives_reject_missing_inputs():
    model = build_model(ModelSpec("classifier", "clipshift-tiny", ["a", "b"]))
    data = TrainData(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="'supervised' needs labels"):
        train(model, data, TrainConfig("supervised", epochs=1), progress=False)
    with pytest.raises(ValueError, match="'contrastive' needs captions"):
        train(model, data, TrainConfig("contrastive", epochs=1), progress=False)
    with pytest.raises(ValueError, match="unknown objective 'byol'"):
        TrainConfig("byol").validate()
    with pytest.raises(ValueError, match="'simclr' needs a SimCLR model"):
        train(model, data, TrainConfig("simclr", epochs=1), progress=False)
