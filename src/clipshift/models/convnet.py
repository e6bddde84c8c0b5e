"""Small residual CNNs for the embedded world, registered in timm's model registry.

They follow timm's interface (``forward_features``, ``forward_head``, ``reset_classifier``,
``num_features``, ``pretrained_cfg``), so the *same* image tower is built by name both by
``timm.create_model`` (supervised classifiers) and by open_clip's ``TimmModel`` (the image
tower of a CLIP model whose config says ``"timm_model_name": "clipshift_convnet_tiny"``).
Sized for 32×32 images on a CPU: downsampling ×8 in three stages.
"""

from __future__ import annotations

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import register_model
from torch import nn

__all__ = ["ConvNet"]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = _conv_bn(width, width)
        self.conv2 = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.conv2(self.conv1(x)))


class ConvNet(nn.Module):
    """Stem (stride `stem_stride`), then one stage per width: a conv, stride 2 after the first
    stage, followed by `blocks[i]` residual blocks."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        blocks: tuple[int, ...] = (0, 1, 1),
        stem_stride: int = 2,
        num_classes: int = 1000,
        global_pool: str = "avg",
        in_chans: int = 3,
        drop_rate: float = 0.0,
    ):
        super().__init__()
        self.widths = tuple(widths)
        if len(blocks) != len(widths):
            raise ValueError(f"blocks needs one entry per stage ({len(widths)}), got {blocks}")
        self.stem = _conv_bn(in_chans, widths[0], stride=stem_stride)
        stages = []
        for i, width in enumerate(widths):
            previous = widths[max(i - 1, 0)]
            layers = [_conv_bn(previous, width, stride=1 if i == 0 else 2)]
            layers += [ResidualBlock(width) for _ in range(blocks[i])]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.num_features = widths[-1]
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes, global_pool)
        self.pretrained_cfg = {"input_size": (in_chans, 32, 32), "mean": (0.5,) * 3, "std": (0.25,) * 3,
                               "pool_size": None, "num_classes": num_classes}
        self.default_cfg = self.pretrained_cfg

    def reset_classifier(self, num_classes: int, global_pool: str | None = "avg") -> None:
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, num_features, H', W'), H' = H / (stem_stride · 2^(stages-1))."""
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(widths, blocks, pretrained=False, **kwargs) -> ConvNet:
    kwargs.setdefault("stem_stride", 2)
    if pretrained:
        raise ValueError("clipshift convnets have no published weights; load a checkpoint instead")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "drop_path_rate"):
        kwargs.pop(key, None)
    return ConvNet(widths=widths, blocks=tuple(blocks), **kwargs)


@register_model
def clipshift_convnet_tiny(pretrained: bool = False, **kwargs) -> ConvNet:
    """~27k parameters: for tests and the `tiny` preset."""
    return _create((16, 32, 64), (0, 0, 0), pretrained, **kwargs)


@register_model
def clipshift_convnet_small(pretrained: bool = False, **kwargs) -> ConvNet:
    """~0.4M parameters: the quickstart's image tower."""
    return _create((32, 64, 128), (0, 0, 1), pretrained, **kwargs)
