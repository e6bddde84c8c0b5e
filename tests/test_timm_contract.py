"""The image towers clipshift registers with timm keep timm's model contract, checked the way timm's own
tests/test_models.py checks its models: the attributes and methods every timm model has, a pretrained cfg
named after the architecture, ``features_only=True``, ``forward_intermediates``, a backward pass that
reaches every parameter. Parametrised over every model clipshift registers (discovered from timm's registry).
"""

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models import group_parameters

import clipshift
from clipshift.models import convnet
from clipshift.models.factory import MEAN, STD

MODELS = timm.list_models("clipshift_*")
BATCH = 2


def _input(model, batch=BATCH, channels=None):
    channels, height, width = model.pretrained_cfg["input_size"] if channels is None else (channels, 32, 32)
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(0))


def _create(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).eval()


def test_the_registry_lists_exactly_what_clipshift_registers():
    assert MODELS, "no clipshift_* model in timm's registry"
    own = {name for name in convnet.__all__
           if timm.is_model(name) and timm.models.model_entrypoint(name).__module__ == convnet.__name__}
    assert set(MODELS) == own
    # timm's backward / torchscript / fx tests select only models whose name matches a pretrained cfg
    assert timm.list_models("clipshift_*", name_matches_cfg=True) == MODELS
    configs = Path(clipshift.__file__).parent / "model_configs"
    towers = {json.loads(p.read_text())["vision_cfg"].get("timm_model_name") for p in configs.glob("*.json")}
    assert towers - {None} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg_is_named_after_the_model_and_describes_it(name):
    model = _create(name)
    cfg = model.pretrained_cfg
    assert cfg["architecture"] == name and timm.models.get_pretrained_cfg(name).architecture == name
    assert model.default_cfg is cfg
    assert tuple(cfg["mean"]) == MEAN and tuple(cfg["std"]) == STD  # the pixel statistics clipshift trains with
    # the head open_clip builds and drops: every CLIP tower's initialisation draws it from the RNG stream
    assert cfg["num_classes"] == model.num_classes == 1000
    state = model.state_dict()
    assert cfg["first_conv"] + ".weight" in state and cfg["classifier"] + ".weight" in state
    features = model.forward_features(_input(model))
    assert features.shape[-2:] == tuple(cfg["pool_size"])
    assert not timm.list_models("clipshift_*", pretrained=True)
    with pytest.raises(ValueError, match="no published weights"):
        timm.create_model(name, pretrained=True)


@pytest.mark.parametrize("name", MODELS)
def test_forward_features_and_head_agree_with_num_features_and_head_hidden_size(name):
    model = _create(name, num_classes=7)
    x = _input(model)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[:2] == (BATCH, model.num_features)
    pre_logits = model.forward_head(features, pre_logits=True)
    assert pre_logits.shape == (BATCH, model.head_hidden_size) and model.head_hidden_size == model.num_features
    logits = model.forward_head(features)
    assert logits.shape == (BATCH, 7) and torch.equal(model(x), logits)
    head = model.get_classifier()
    assert isinstance(head, torch.nn.Linear) and (head.in_features, head.out_features) == (model.head_hidden_size, 7)
    assert torch.allclose(head(pre_logits), logits)


@pytest.mark.parametrize("name", MODELS)
def test_reset_classifier(name):
    model = _create(name)
    x = _input(model)
    pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(0)
    assert model.num_classes == 0 and isinstance(model.get_classifier(), torch.nn.Identity)
    assert torch.equal(model(x), pre_logits)
    model.reset_classifier(5)
    assert model.num_classes == 5 and model.get_classifier().out_features == 5 and model(x).shape == (BATCH, 5)
    model.reset_classifier(0, "")  # no pooling: feature maps
    assert model(x).shape == model.forward_features(x).shape
    model.reset_classifier(3, "catavgmax")  # a pooling that doubles the pooled width
    assert model.head_hidden_size == 2 * model.num_features
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (BATCH, model.head_hidden_size)
    assert model(x).shape == (BATCH, 3)
    model.reset_classifier(4)  # global_pool=None keeps the current pooling
    assert model.global_pool.pool_type == "catavgmax" and model(x).shape == (BATCH, 4)
    model.double().reset_classifier(6)  # the new head on the model's device and dtype
    assert model.get_classifier().weight.dtype == torch.float64 and model(x.double()).shape == (BATCH, 6)


@pytest.mark.parametrize("name", MODELS)
def test_num_classes_zero_gives_pooled_features_and_no_pool_gives_maps(name):
    full = _create(name)
    x = _input(full)
    features = _create(name, num_classes=0)
    assert features.num_classes == 0
    assert torch.equal(features(x), full.forward_head(full.forward_features(x), pre_logits=True))
    assert features(x).shape == (BATCH, features.num_features)
    maps = _create(name, num_classes=0, global_pool="")
    assert torch.equal(maps(x), full.forward_features(x))
    pooled = _create(name, num_classes=3, global_pool="max")
    assert torch.equal(pooled.forward_head(full.forward_features(x), pre_logits=True),
                       full.forward_features(x).amax(dim=(2, 3)))


@pytest.mark.parametrize("name", MODELS)
def test_features_only_returns_the_maps_feature_info_describes(name):
    full = _create(name)
    x = _input(full)
    extractor = _create(name, features_only=True)
    maps = extractor(x)
    info = extractor.feature_info
    assert isinstance(maps, list) and len(maps) == len(full.feature_info) >= 3
    assert info.channels() == [f["num_chs"] for f in full.feature_info]
    for fmap, channels, reduction in zip(maps, info.channels(), info.reduction()):
        assert fmap.shape == (BATCH, channels, x.shape[2] // reduction, x.shape[3] // reduction)
    assert torch.equal(maps[-1], full.forward_features(x))  # same seed, same weights: the last map is the trunk's
    assert extractor.pretrained_cfg["architecture"] == name
    picked = _create(name, features_only=True, out_indices=(1,))
    assert picked.feature_info.channels() == [info.channels()[1]] and torch.equal(picked(x)[0], maps[1])
    getter = _create(name, features_only=True, feature_cls="getter")  # through forward_intermediates
    assert all(torch.equal(a, b) for a, b in zip(getter(x), maps, strict=True))


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates(name):
    model = _create(name)
    x = _input(model)
    final, intermediates = model.forward_intermediates(x)
    assert torch.equal(final, model.forward_features(x))
    assert [t.shape[1] for t in intermediates] == [f["num_chs"] for f in model.feature_info]
    assert [x.shape[2] // t.shape[2] for t in intermediates] == [f["reduction"] for f in model.feature_info]
    last = model.forward_intermediates(x, indices=1, intermediates_only=True)
    assert len(last) == 1 and torch.equal(last[0], final)
    early = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
    assert torch.equal(early[0], intermediates[0])
    with pytest.raises(ValueError, match="out of range"):
        model.forward_intermediates(x, indices=[len(model.feature_info)])
    kept = model.prune_intermediate_layers([0])
    assert kept == [0] and model.num_classes == 0 and torch.equal(model(x), intermediates[0])


@pytest.mark.parametrize("name", MODELS)
def test_backward_reaches_every_parameter(name):
    model = _create(name, num_classes=42).train()
    outputs = model(_input(model))
    assert outputs.shape == (BATCH, 42)
    outputs.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_grad_checkpointing_and_group_matcher(name):
    model = _create(name, num_classes=3).train()
    x = _input(model)

    def backward():  # how many tensors the forward pass keeps for the backward pass
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(1) or t, lambda t: t):
            loss = model(x).sum()
        loss.backward()
        return len(saved)

    kept = backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing()
    assert backward() < kept  # the stages' activations are recomputed, not kept
    assert all(torch.allclose(p.grad, grads[n], atol=1e-6) for n, p in model.named_parameters())
    groups = group_parameters(model, model.group_matcher())
    grouped = [n for names in groups.values() for n in names]
    head = {n for n, _ in model.get_classifier().named_parameters(prefix="head")}
    assert sorted(grouped) == sorted(n for n, _ in model.named_parameters())
    assert set(groups[max(groups)]) == head  # the head is the last group
    coarse = group_parameters(model, model.group_matcher(coarse=True))
    assert len(coarse) == len(model.stages) + 2  # stem, one group per stage, head
    assert len(groups) == sum(len(stage) for stage in model.stages) + 2  # finer: one per module of a stage


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(name, in_chans):
    model = _create(name, in_chans=in_chans, num_classes=2)
    assert model.in_chans == in_chans and model.stem[0].in_channels == in_chans
    assert timm.models.get_model_input_config(model)["input_size"][0] == in_chans
    assert model(_input(model, channels=in_chans)).shape == (BATCH, 2)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", MODELS)
def test_torchscript(name):
    model = _create(name, num_classes=3)
    x = _input(model)
    assert torch.allclose(torch.jit.script(model)(x), model(x))


def _conv_bn(prefix):
    return [f"{prefix}.0.weight"] + [f"{prefix}.1.{k}" for k in
                                     ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


# The parameter names in saved checkpoints follow from the residual blocks per stage
SAVED_LAYOUT = {"clipshift_convnet_tiny": (0, 0, 0), "clipshift_convnet_small": (0, 0, 1)}


@pytest.mark.parametrize("name", MODELS)
def test_parameter_names_of_saved_checkpoints_are_unchanged(name):
    expected = _conv_bn("stem")
    for stage, blocks in enumerate(SAVED_LAYOUT[name]):
        expected += _conv_bn(f"stages.{stage}.0")
        for block in range(1, blocks + 1):
            expected += _conv_bn(f"stages.{stage}.{block}.conv1") + _conv_bn(f"stages.{stage}.{block}.conv2")
    expected += ["head.weight", "head.bias"]
    assert list(_create(name).state_dict()) == expected
