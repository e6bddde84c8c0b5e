"""Small residual CNNs for the embedded world, registered in timm's model registry.

They keep timm's model contract (``num_features``, ``head_hidden_size``, ``forward_features``,
``forward_head(x, pre_logits=...)``, ``reset_classifier``, ``get_classifier``, ``feature_info``,
``forward_intermediates``, ``pretrained_cfg`` named after the architecture, ``features_only=True``)
and are built by timm's ``build_model_with_cfg``, so the *same* image tower is built by name both by
``timm.create_model`` (supervised classifiers, feature extractors) and by open_clip's ``TimmModel``
(the image tower of a CLIP model whose config says ``"timm_model_name": "clipshift_convnet_tiny"``).
Sized for 32×32 images on a CPU: downsampling ×8 in three stages.

No ``from __future__ import annotations`` here: torch.fx copies ``forward``'s annotations into the
code it generates, and TorchScript cannot read them back as strings (timm's fx + script check).
"""

import torch
from timm.layers import create_classifier, get_device_dtype
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

__all__ = ["ConvNet"]


def _conv_bn(cin: int, cout: int, stride: int = 1, dd: dict | None = None) -> nn.Sequential:
    dd = dd or {}
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False, **dd), nn.BatchNorm2d(cout, **dd),
                         nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dd: dict | None = None):
        super().__init__()
        dd = dd or {}
        self.conv1 = _conv_bn(width, width, dd=dd)
        self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, bias=False, **dd), nn.BatchNorm2d(width, **dd))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.conv1(x)))


def _take_indices(count: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """timm's feature indices: None → all `count`, an int n → the last n, a sequence → those (−i from
    the end); with the largest."""
    if indices is None:
        indices = count
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise ValueError(f"last-n ({indices}) is out of range (1 to {count})")
        take = [count - indices + i for i in range(indices)]
    else:
        take = [count + i if i < 0 else i for i in indices]
        if not take or not all(0 <= i < count for i in take):
            raise ValueError(f"feature indices {list(indices)} are out of range (0 to {count - 1})")
    return take, max(take)


class ConvNet(nn.Module):
    """Stem (stride `stem_stride`), then one stage per width: a conv, stride 2 after the first
    stage, followed by `blocks[i]` residual blocks. The stages' outputs are the feature maps
    (``feature_info``: modules ``stages.i``, reduction ``stem_stride · 2^i``)."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        blocks: tuple[int, ...] = (0, 1, 1),
        stem_stride: int = 2,
        num_classes: int = 1000,
        global_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.widths = tuple(widths)
        if len(blocks) != len(widths):
            raise ValueError(f"blocks needs one entry per stage ({len(widths)}), got {blocks}")
        self.in_chans = in_chans
        self.stem = _conv_bn(in_chans, widths[0], stride=stem_stride, dd=dd)
        stages, self.feature_info = [], []
        for i, width in enumerate(widths):
            previous = widths[max(i - 1, 0)]
            layers = [_conv_bn(previous, width, stride=1 if i == 0 else 2, dd=dd)]
            layers += [ResidualBlock(width, dd=dd) for _ in range(blocks[i])]
            stages.append(nn.Sequential(*layers))
            self.feature_info.append({"num_chs": width, "reduction": stem_stride * 2 ** i, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.reset_classifier(num_classes, global_pool)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.(\d+)", None)]}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head for `num_classes` (0: none, the model outputs pooled features); `global_pool`
        None keeps the current pooling, '' removes it (the model then outputs feature maps)."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.num_classes = num_classes
        self.global_pool, self.head = create_classifier(self.num_features, num_classes, pool_type=global_pool,
                                                        **get_device_dtype(self))
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_features, H', W'), H' = H / (stem_stride · 2^(stages-1))."""
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW", intermediates_only: bool = False):
        """The stages' outputs selected by `indices` (timm's convention), and, unless
        `intermediates_only`, the final feature map first: ``(final, [maps])``. No norm to apply."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, last = _take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:last + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the stages after the last of `indices` (and the head); the kept indices."""
        take, last = _take_indices(len(self.stages), indices)
        self.stages = self.stages[:last + 1]
        self.feature_info = self.feature_info[:last + 1]
        self.num_features = self.feature_info[-1]["num_chs"]
        if prune_head:
            self.reset_classifier(0, "")
        return take


def _cfg(**kwargs) -> dict:
    """Pretrained-cfg entries (no weights are published): the pixel statistics the towers are trained
    with, 32×32 inputs, and timm's data defaults written out."""
    return {"input_size": (3, 32, 32), "pool_size": (4, 4), "mean": (0.5,) * 3, "std": (0.25,) * 3,
            "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center", "num_classes": 1000,
            "first_conv": "stem.0", "classifier": "head", **kwargs}


# read by timm's register_model: one pretrained cfg per architecture, named after it
default_cfgs = generate_default_cfgs({
    "clipshift_convnet_tiny": _cfg(description="clipshift's tiny image tower (random init; no weights)"),
    "clipshift_convnet_small": _cfg(description="clipshift's small image tower (random init; no weights)"),
})


def _create(variant: str, widths, blocks, pretrained: bool = False, **kwargs) -> ConvNet:
    if pretrained:
        raise ValueError("clipshift convnets have no published weights; load a checkpoint instead")
    kwargs.pop("drop_path_rate", None)  # no stochastic depth in these towers
    return build_model_with_cfg(ConvNet, variant, pretrained, widths=tuple(widths), blocks=tuple(blocks),
                                feature_cfg={"out_indices": tuple(range(len(widths))), "flatten_sequential": True},
                                **kwargs)


@register_model
def clipshift_convnet_tiny(pretrained: bool = False, **kwargs) -> ConvNet:
    """~27k parameters: for tests and the `tiny` preset."""
    return _create("clipshift_convnet_tiny", (16, 32, 64), (0, 0, 0), pretrained, **kwargs)


@register_model
def clipshift_convnet_small(pretrained: bool = False, **kwargs) -> ConvNet:
    """~0.4M parameters: the quickstart's image tower."""
    return _create("clipshift_convnet_small", (32, 64, 128), (0, 0, 1), pretrained, **kwargs)
