"""The training objectives against explicit hand computations (NT-Xent, symmetric InfoNCE) and the
training augmentations (the loop's flip + shift, SimCLR's views): they change images, keep their
shape, dtype and range, and are reproducible from the generator."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipshift.models.factory import MEAN, STD, ModelSpec, build_model, get_tokenizer
from clipshift.train.loop import TrainConfig, TrainData, apply_augment, augment, train
from clipshift.train.objectives import Contrastive, nt_xent, simclr_views


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    """NT-Xent written out anchor by anchor (Chen et al. 2020, eq. 1): view i's positive is the other
    view of its image (i + N or i - N), its denominator every view but itself."""
    z = [F.normalize(v.double(), dim=0) for v in torch.cat([z1, z2])]
    n, total = len(z1), 0.0
    for i in range(2 * n):
        positive = i + n if i < n else i - n
        similarity = [float(z[i] @ z[k]) / temperature for k in range(2 * n)]
        denominator = sum(math.exp(s) for k, s in enumerate(similarity) if k != i)
        total += -math.log(math.exp(similarity[positive]) / denominator)
    return total / (2 * n)


def reference_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE written out row by row: image i against every caption, caption i against
    every image, each -log softmax of the matching pair, averaged over both directions."""
    n, total = len(image), 0.0
    for i in range(n):
        to_texts = [scale * float(image[i] @ text[j]) for j in range(n)]
        to_images = [scale * float(text[i] @ image[j]) for j in range(n)]
        for row in (to_texts, to_images):
            total += -row[i] + math.log(sum(math.exp(v) for v in row))
    return total / (2 * n)


@pytest.mark.parametrize("n, dim, temperature", [(4, 8, 0.5), (7, 16, 0.1), (16, 3, 1.0)])
def test_nt_xent_matches_the_per_anchor_definition(n, dim, temperature):
    generator = torch.Generator().manual_seed(n)
    z1, z2 = torch.randn(n, dim, generator=generator), torch.randn(n, dim, generator=generator)
    z2 = z2 + 2 * z1  # correlated views, as two augmentations of the same images are
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(reference_nt_xent(z1, z2, temperature), rel=1e-5)
    # projections are normalised first: scaling a view changes nothing
    assert nt_xent(3 * z1, z2, temperature).item() == pytest.approx(reference_nt_xent(z1, z2, temperature), rel=1e-5)


def test_nt_xent_tiny_case_by_hand():
    """Two images, two identical views each, orthogonal: every anchor has similarity 1 to its positive and
    0 to the two negatives, so the loss is -log(e^(1/t) / (e^(1/t) + 2)) = log(1 + 2 e^(-1/t))."""
    z = torch.eye(2)
    for t in (1.0, 0.5):
        assert nt_xent(z, z, t).item() == pytest.approx(math.log(1 + 2 * math.exp(-1 / t)), rel=1e-6)
    # with self-similarity left in the denominator it would be log(2 + 2 e^(-1/t)): 0.998 at t=1, not 0.551
    assert nt_xent(z, z, 1.0).item() == pytest.approx(0.5514, abs=1e-4)
    # one image only: the positive is the only other view, nothing to contrast, loss 0
    assert nt_xent(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]]), 0.2).item() == pytest.approx(0, abs=1e-6)
    # swapping the views of image 1 with those of image 0 moves every positive to a negative: the loss grows
    swapped = nt_xent(z, z.flip(0), 1.0).item()
    assert swapped == pytest.approx(-math.log(math.exp(0) / (2 * math.exp(0) + math.exp(1))), rel=1e-6)


def test_clip_loss_matches_a_row_by_row_hand_computation():
    torch.manual_seed(1)
    image, text = F.normalize(torch.randn(6, 5), dim=-1), F.normalize(torch.randn(6, 5), dim=-1)
    loss = Contrastive(None).clip_loss(image, text, torch.tensor(7.5)).item()
    assert loss == pytest.approx(reference_clip_loss(image, text, 7.5), rel=1e-6)
    # two orthogonal pairs by hand: matched, log(1 + e^-s) per row; captions swapped, log(1 + e^s)
    eye = torch.eye(2)
    for s in (1.0, 4.0):
        assert Contrastive(None).clip_loss(eye, eye, torch.tensor(s)).item() == \
            pytest.approx(math.log(1 + math.exp(-s)), rel=1e-4)
        assert Contrastive(None).clip_loss(eye, eye.flip(0), torch.tensor(s)).item() == \
            pytest.approx(math.log(1 + math.exp(s)), rel=1e-5)


def test_contrastive_objective_uses_the_model_temperature_and_clamps_it_at_100():
    model = build_model(ModelSpec("clip", "clipshift-tiny", ["a", "b"]), seed=0)
    objective = Contrastive(None)
    images = torch.randn(4, 3, 32, 32)
    tokens = get_tokenizer("clipshift-tiny")(["a red star", "a blue disc", "a cross", "a heart"])
    with torch.no_grad():
        out = model(images, tokens)
        expected = reference_clip_loss(out["image_features"], out["text_features"], model.logit_scale.exp().item())
        assert objective.loss(model, {"images": images, "tokens": tokens}).item() == pytest.approx(expected, rel=1e-5)
        model.logit_scale.fill_(math.log(500))
    objective.after_step(model)
    assert model.logit_scale.exp().item() == pytest.approx(100, rel=1e-5)


# --- augmentations ---------------------------------------------------------------------------------------------

def _uint8_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _changed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) whether each image differs anywhere."""
    return (a != b).flatten(1).any(1)


def test_training_augmentation_changes_images_reproducibly():
    images = _uint8_images()
    moved = augment(images, torch.Generator().manual_seed(0))
    assert moved.shape == images.shape and moved.dtype == torch.uint8
    # identity only when no flip and a (0, 0) shift: 1/2 x 1/49 of images
    assert _changed(moved, images).float().mean() >= 0.9
    # flips and shifts move pixels, they never invent values: every output value occurs in its input image
    for out, src in zip(moved[:8], images[:8]):
        assert set(out.unique().tolist()) <= set(src.unique().tolist())
    assert torch.equal(moved, augment(images, torch.Generator().manual_seed(0)))
    assert _changed(moved, augment(images, torch.Generator().manual_seed(1))).float().mean() >= 0.8


def test_training_augmentation_known_flips_and_shifts():
    images = _uint8_images(3)
    flip = torch.tensor([True, False, False])
    shift = torch.tensor([[0, 0], [1, 0], [0, -2]])
    out = apply_augment(images, flip, shift)
    assert torch.equal(out[0], images[0].flip(2))  # mirrored left-right
    rows = (torch.arange(32) + 1).clamp(max=31)  # down by one row, the last row repeated
    assert torch.equal(out[1], images[1][:, rows])
    cols = (torch.arange(32) - 2).clamp(min=0)  # two columns, the first repeated
    assert torch.equal(out[2], images[2][:, :, cols])


def test_the_training_loop_applies_the_augmentation():
    """Same data, model and seed: augment=True and augment=False see different pixels from the first step."""
    images = _uint8_images(32)
    labels = torch.arange(32) % 2
    first = {}
    for flag in (True, False):
        model = build_model(ModelSpec("classifier", "clipshift-tiny", ["a", "b"]), seed=0)
        config = TrainConfig("supervised", epochs=1, batch_size=32, lr=1e-3, augment=flag, log_every=1)
        first[flag] = train(model, TrainData(images, labels=labels), config, progress=False)[0]["loss"]
    assert first[True] != first[False]


def test_simclr_views_change_images_keep_range_and_are_reproducible():
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    images = (_uint8_images(32).float() / 255 - mean) / std  # normalised, as the loop passes them
    view = simclr_views(images, torch.Generator().manual_seed(0))
    assert view.shape == images.shape and view.dtype == torch.float32
    pixels = view * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5  # still images in [0, 1]
    assert ((view - images).abs().flatten(1).amax(1) > 0.05).float().mean() == 1.0
    assert torch.equal(view, simclr_views(images, torch.Generator().manual_seed(0)))
    other = simclr_views(images, torch.Generator().manual_seed(1))
    assert ((view - other).abs().flatten(1).amax(1) > 0.05).float().mean() == 1.0
