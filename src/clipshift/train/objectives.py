"""Training objectives, registered by name: each turns a batch into a scalar loss.

- ``contrastive``: symmetric InfoNCE between image and caption embeddings (open_clip's
  ``ClipLoss``), with the learnable temperature clamped at 100 as in CLIP. Under ``torchrun`` the
  features of all ranks are gathered (with gradients by default: the loss of the global batch).
- ``supervised``: cross-entropy on class labels (true or text-matched), optional label smoothing.
  ``finetune`` is the same loss, used after ``simclr`` pre-training (Fang et al.'s baseline).
- ``simclr``: image-only NT-Xent (Chen et al. 2020) between two augmented views of each image
  (random resized crop, flip, colour jitter, grayscale), negatives from the whole global batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from ..distributed import world
from ..models.factory import MEAN, STD


class Contrastive:
    model_kind = "clip"  # what each objective needs: the model it trains and the data fields of a batch
    needs = ("images", "tokens")
    drop_last = True  # every step sees a full batch of negatives

    def __init__(self, config):
        rank, size = world()
        self.clip_loss = ClipLoss(local_loss=getattr(config, "local_loss", False),
                                  gather_with_grad=getattr(config, "gather_with_grad", True),
                                  rank=rank, world_size=size)

    def check(self, model, data) -> None:
        if data.tokens is None:
            raise ValueError("objective 'contrastive' needs captions (tokens), but the data has none")
        if not hasattr(model, "encode_text"):
            raise ValueError(f"objective 'contrastive' needs a CLIP model, got {type(model).__name__}")

    def loss(self, model, batch, generator=None) -> torch.Tensor:
        out = model(batch["images"], batch["tokens"])
        return self.clip_loss(out["image_features"], out["text_features"], out["logit_scale"])

    def after_step(self, model) -> None:
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))


class Supervised:
    model_kind = "classifier"
    needs = ("images", "labels")
    drop_last = False

    def __init__(self, config):
        self.label_smoothing = config.label_smoothing

    def check(self, model, data) -> None:
        if data.labels is None:
            raise ValueError("objective 'supervised' needs labels, but the data has none")
        if (data.labels < 0).any():
            raise ValueError("objective 'supervised' got unlabelled examples (label -1); drop them first")
        if not hasattr(model, "head"):
            raise ValueError(f"objective 'supervised' needs a classifier, got {type(model).__name__}")

    def loss(self, model, batch, generator=None) -> torch.Tensor:
        return F.cross_entropy(model(batch["images"]), batch["labels"], label_smoothing=self.label_smoothing)

    def after_step(self, model) -> None:
        pass


def simclr_views(images: torch.Tensor, generator: torch.Generator, min_scale: float = 0.2,
                 jitter: float = 0.4, p_jitter: float = 0.8, p_gray: float = 0.2) -> torch.Tensor:
    """One random view of each normalised image (B, 3, H, W): resized crop (area in [min_scale, 1],
    aspect ratio in [3/4, 4/3]) with horizontal flip, colour jitter (brightness, contrast,
    saturation by up to ±`jitter`, with probability `p_jitter`) and grayscale (`p_gray`).
    All parameters come from `generator`, so views are reproducible."""
    b, _, h, w = images.shape
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    area = min_scale + (1 - min_scale) * rand(b)
    ratio = torch.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b))
    sx, sy = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
    cx, cy = (1 - sx) * (2 * rand(b) - 1), (1 - sy) * (2 * rand(b) - 1)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx * flip, cx, sy, cy
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    x = F.grid_sample(images.float() * std + mean, grid, mode="bilinear", padding_mode="reflection",
                      align_corners=False)  # in [0, 1]
    on = (rand(b) < p_jitter).to(x).view(b, 1, 1, 1)
    factors = (1 + jitter * (2 * rand(b, 3) - 1)).to(x)  # brightness, contrast, saturation
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    y = x * factors[:, 0].view(b, 1, 1, 1)
    y = (y - gray.mean((2, 3), keepdim=True)) * factors[:, 1].view(b, 1, 1, 1) + gray.mean((2, 3), keepdim=True)
    y_gray = 0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:3]
    y = (y - y_gray) * factors[:, 2].view(b, 1, 1, 1) + y_gray
    x = on * y.clamp(0, 1) + (1 - on) * x
    to_gray = (rand(b) < p_gray).to(x).view(b, 1, 1, 1)
    x_gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
    x = to_gray * x_gray + (1 - to_gray) * x
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of paired projections (B, D): each view's positive is the other view of its image,
    its negatives the other 2B - 2 views. Under ``torchrun`` the projections of all ranks are
    gathered with gradients, so the loss is that of the global batch."""
    if world()[1] > 1:
        import torch.distributed.nn.functional as dist_nn

        z1, z2 = torch.cat(dist_nn.all_gather(z1)), torch.cat(dist_nn.all_gather(z2))
    z = F.normalize(torch.cat([z1, z2]).float(), dim=-1)
    n = len(z1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


class SimCLR:
    model_kind = "simclr"
    needs = ("images",)  # two augmented views of each image are made inside the loss
    drop_last = True

    def __init__(self, config):
        self.temperature = config.temperature

    def check(self, model, data) -> None:
        if not hasattr(model, "projection"):
            raise ValueError(f"objective 'simclr' needs a SimCLR model (image tower + projection head), "
                             f"got {type(model).__name__}")

    def loss(self, model, batch, generator=None) -> torch.Tensor:
        if generator is None:
            raise ValueError("objective 'simclr' needs the loop's generator for its augmentations")
        images = batch["images"]
        return nt_xent(model(simclr_views(images, generator)), model(simclr_views(images, generator)),
                       self.temperature)

    def after_step(self, model) -> None:
        pass


OBJECTIVES = {"contrastive": Contrastive, "supervised": Supervised, "finetune": Supervised, "simclr": SimCLR}


def model_kind(objective: str) -> str:
    """The kind of model an objective trains (``clip``, ``classifier``, ``simclr``)."""
    return get_objective(objective).model_kind


def needs(objective: str) -> tuple[str, ...]:
    """The batch fields an objective reads: images and, for some, tokens (captions) or labels."""
    return get_objective(objective).needs


def get_objective(name: str):
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; known: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]
