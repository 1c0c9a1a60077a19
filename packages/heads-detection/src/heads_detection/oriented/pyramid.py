"""A feature pyramid on any multi-stride backbone of heads-core."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from heads_core import create_feature_backbone
from heads_core._meta import meta_forward
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

__all__ = ["PyramidBackbone", "create_pyramid_backbone", "default_levels"]

# Side of the square meta-device input used to measure the pyramid's strides;
# divisible by every stride up to 512.
_MEASURE_SIDE = 512


class PyramidBackbone(nn.Module):
    """Backbone maps of selected levels, merged by torchvision's FeaturePyramidNetwork.

    Forward takes (N, C, H, W) images and returns one (N, out_channels, h, w)
    map per pyramid level, finest first.

    Attributes:
        body: heads-core's `FeatureBackbone`, which returns every level it has.
        selected: indices of the body's maps that enter the pyramid.
        fpn: the pyramid; with two extra levels, P6 and P7 come from strided
            convolutions on the coarsest pyramid map, as in RetinaNet and FCOS.
        out_channels: channels of every pyramid map.
        strides: stride of every pyramid map, measured.
    """

    def __init__(self, body: nn.Module, selected: Sequence[int], out_channels: int, extra_levels: int) -> None:
        super().__init__()
        if extra_levels not in (0, 2):
            raise ValueError(f"extra_levels must be 0 or 2 (P6 and P7), got {extra_levels}")
        self.body = body
        self.selected = list(selected)
        extra = LastLevelP6P7(out_channels, out_channels) if extra_levels == 2 else None
        self.fpn = FeaturePyramidNetwork([body.channels[i] for i in self.selected], out_channels, extra_blocks=extra)
        self.out_channels = out_channels
        self.strides: list[int] = []

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = self.body(x)
        pyramid = self.fpn(OrderedDict((str(i), maps[index]) for i, index in enumerate(self.selected)))
        return list(pyramid.values())


def default_levels(strides: Sequence[int]) -> list[int]:
    """Return the levels a pyramid uses by default: the coarsest three with stride 8 or more.

    This matches torchvision's RetinaNet and FCOS on ResNet, which take
    layer2 to layer4 (strides 8, 16 and 32).
    """
    candidates = [i for i, stride in enumerate(strides) if stride >= 8]
    if not candidates:
        candidates = list(range(len(strides)))
    return candidates[-3:]


def create_pyramid_backbone(
    source: str,
    name: str,
    *,
    weights: str | None,
    in_chans: int,
    levels: Sequence[int] | None,
    out_channels: int,
    extra_levels: int,
) -> PyramidBackbone:
    """Build a heads-core feature backbone and a feature pyramid on the chosen levels.

    Args:
        levels: backbone levels, counted from 0 at the finest; None picks `default_levels`.

    Raises:
        ValueError: a level does not exist, or the chosen levels do not have
            strictly increasing strides (a ViT, for example, has one stride only).
    """
    body = create_feature_backbone(source, name, weights=weights, in_chans=in_chans)
    strides = list(body.strides)
    described = ", ".join(f"{i} (stride {s})" for i, s in enumerate(strides))
    chosen = default_levels(strides) if levels is None else list(levels)
    for level in chosen:
        if not 0 <= level < len(strides):
            raise ValueError(f"backbone level {level} does not exist in {source}:{name}; its levels are {described}")
    chosen_strides = [strides[i] for i in chosen]
    if any(b <= a for a, b in zip(chosen_strides, chosen_strides[1:])):
        raise ValueError(
            f"levels {chosen} of {source}:{name} have strides {chosen_strides}, but a feature pyramid needs "
            f"strictly increasing strides; its levels are {described}; choose levels with different strides "
            "or a backbone with several strides (a CNN, Swin or ConvNeXt)"
        )
    pyramid = PyramidBackbone(body, chosen, out_channels, extra_levels)
    maps = meta_forward(pyramid, torch.empty(1, in_chans, _MEASURE_SIDE, _MEASURE_SIDE, device="meta"))
    pyramid.strides = [round(_MEASURE_SIDE / m.shape[-2]) for m in maps]
    return pyramid
