"""Backbone feature maps for detectors: level selection, single-map pyramids and feature pyramid networks.

`build_fpn_backbone` is the entry point of the FPN architectures (Faster
R-CNN, Mask R-CNN, RetinaNet, FCOS): torchvision ResNets get torchvision's
own `BackboneWithFPN`, any other timm or torchvision backbone gets a
`FeaturePyramidBackbone` over heads-core's feature backbone. Both return an
ordered dict of maps with `out_channels` channels, as torchvision's
detectors expect, and the caller sizes anchors from the measured strides.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from heads_core import create_feature_backbone
from heads_core._meta import meta_forward
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import (
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)
from torchvision.ops.misc import FrozenBatchNorm2d

from .freezing import (
    check_trainable,
    eval_mode,
    freeze_batchnorm,
    freeze_leading_stages,
    parameter_stages,
)
from .manifest import DetectionBackboneSpec
from .torchvision_backbones import (
    RESNET_DEFAULT_TRAINABLE,
    RESNET_PREFIXES,
    resnet_fpn_backbone,
)

if TYPE_CHECKING:
    from heads_core._backbones import FeatureBackbone

__all__ = [
    "FeaturePyramidBackbone",
    "PyramidLayout",
    "SelectedFeatures",
    "SimpleFeaturePyramid",
    "build_fpn_backbone",
    "build_selected_features",
    "measure_maps",
]

# The input size used to measure strides when images are not resized to one fixed size.
MEASURE_SIZE = (512, 512)
# Stages whose output stride is at least this train by default with pretrained weights,
# which matches torchvision's three trainable ResNet stages (layer2 to layer4).
DEFAULT_TRAINABLE_MIN_STRIDE = 8


def log2_stride(input_side: int, map_side: int) -> int:
    """Return the power of two nearest to input_side / map_side (odd sizes round map sides up)."""
    return 2 ** round(math.log2(input_side / map_side))


@dataclass(frozen=True)
class PyramidLayout:
    """Names, channels and strides of the maps a backbone module returns."""

    names: list[str]
    channels: list[int]
    strides: list[int]


def measure_maps(module: nn.Module, in_chans: int, size: Sequence[int]) -> PyramidLayout:
    """Run `module` on the meta device and describe the maps it returns (a list or an ordered dict)."""
    with eval_mode(module):
        outputs = meta_forward(module, torch.empty(1, in_chans, *size, device="meta"))
    if isinstance(outputs, dict):
        names, maps = list(outputs.keys()), list(outputs.values())
    else:
        maps = list(outputs)  # type: ignore[call-overload]
        names = [str(i) for i in range(len(maps))]
    return PyramidLayout(names, [m.shape[1] for m in maps], [log2_stride(size[0], m.shape[-2]) for m in maps])


class SimpleFeaturePyramid(nn.Module):
    """Three maps at half, the same and double the stride of one input map.

    Backbones with a single stride (ViT) give one map. A transposed
    convolution doubles its resolution and max pooling halves it, so the
    feature pyramid network above gets three levels, as in ViTDet.

    Attributes:
        channels: channels of the three returned maps.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, max(1, channels // 2), kernel_size=2, stride=2)
        self.downsample = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.channels = [self.upsample.out_channels, channels, channels]

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.upsample(x), x, self.downsample(x)]


class SelectedFeatures(nn.Module):
    """A heads-core feature backbone reduced to the chosen levels.

    Attributes:
        selected: indices into the feature backbone's outputs.
        pyramid: a `SimpleFeaturePyramid` made from the last selected map, or None.
        channels: channels of the returned maps, from the feature backbone's measured channels.
    """

    def __init__(self, features: FeatureBackbone, selected: Sequence[int], pyramid: SimpleFeaturePyramid | None) -> None:
        super().__init__()
        self.features = features
        self.selected = list(selected)
        self.pyramid = pyramid
        chosen = [features.channels[i] for i in self.selected]
        self.channels = list(pyramid.channels) if pyramid is not None else chosen

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = self.features(x)
        chosen = [maps[i] for i in self.selected]
        if self.pyramid is not None:
            return list(self.pyramid(chosen[-1]))
        return chosen


def _default_selection(strides: Sequence[int], min_stride: int | None, keep_last: int | None) -> list[int]:
    if keep_last is not None:
        distinct: list[int] = []
        for index in range(len(strides) - 1, -1, -1):
            if not distinct or strides[index] < strides[distinct[0]]:
                distinct.insert(0, index)
            if len(distinct) == keep_last:
                break
        return distinct
    chosen = [i for i, s in enumerate(strides) if s >= (min_stride or 1)]
    return chosen or [len(strides) - 1]


def build_selected_features(
    spec: DetectionBackboneSpec,
    *,
    weights: str | None,
    pretrained: bool,
    measure_size: Sequence[int],
    min_stride: int | None = None,
    keep_last: int | None = None,
    expand_single_stride: bool = True,
) -> SelectedFeatures:
    """Build heads-core's feature backbone of `spec` and pick the levels a detector uses.

    Without `spec.levels`, the levels with stride >= `min_stride` are kept, or
    the last `keep_last` levels of distinct strides. A backbone whose levels
    all share one stride (ViT) keeps its last map; with
    `expand_single_stride` a `SimpleFeaturePyramid` turns it into three.

    Batch norms are frozen when `spec.frozen_batchnorm` is true. A stage is
    what a feature level adds to the one before it. The stages before the
    last `spec.trainable_layers` are frozen. Without that option, pretrained
    backbones train the stages of stride 8 and above, and random ones train all.
    """
    features = create_feature_backbone(
        spec.source,
        spec.name,
        weights=weights,
        in_chans=spec.in_chans,
        levels=spec.levels,
        input_size=tuple(measure_size),  # type: ignore[arg-type]
    )
    if spec.frozen_batchnorm:
        features = freeze_batchnorm(features)
    strides = list(features.strides)
    single_stride = len(set(strides)) == 1
    pyramid = None
    if single_stride:
        selected = [len(strides) - 1]
        if expand_single_stride:
            pyramid = SimpleFeaturePyramid(features.channels[-1])
    elif spec.levels is not None:
        selected = list(range(len(strides)))
    else:
        selected = _default_selection(strides, min_stride, keep_last)

    # Each returned level is one stage; tracing which parameters each stage
    # owns costs a forward pass, so it runs only when something is frozen.
    if spec.trainable_layers is not None:
        trainable = spec.trainable_layers
    elif pretrained:
        trainable = sum(1 for s in strides if s >= DEFAULT_TRAINABLE_MIN_STRIDE) or len(strides)
    else:
        trainable = len(strides)
    check_trainable(trainable, len(strides))
    if trainable < len(strides):
        freeze_leading_stages(features, parameter_stages(features, spec.in_chans, measure_size), trainable)
    return SelectedFeatures(features, selected, pyramid)


class FeaturePyramidBackbone(nn.Module):
    """Selected backbone maps through torchvision's FeaturePyramidNetwork.

    Returns an ordered dict: "0", "1", ... for the backbone levels, then the
    extra block's levels ("pool", or "p6" and "p7").

    Attributes:
        out_channels: channels of every returned map.
    """

    def __init__(self, body: SelectedFeatures, in_channels: Sequence[int], out_channels: int, extra_blocks: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def _extra_blocks(kind: Literal["pool", "p6p7"], out_channels: int) -> nn.Module:
    if kind == "pool":
        return LastLevelMaxPool()
    return LastLevelP6P7(out_channels, out_channels)


def build_fpn_backbone(
    spec: DetectionBackboneSpec,
    *,
    weights: str | None,
    pretrained: bool,
    extra: Literal["pool", "p6p7"],
    min_stride: int,
    measure_size: Sequence[int],
    out_channels: int = 256,
) -> tuple[nn.Module, PyramidLayout]:
    """Build the backbone and feature pyramid of an FPN detector; return it with its measured layout.

    Args:
        spec: the validated backbone section.
        weights: backbone weights to load (a resolved path or enum member), or None.
        pretrained: whether the manifest names any pretrained weights. It
            picks the default trainable stages, so it must not depend on
            whether the weights are loaded in this call.
        extra: "pool" adds a max-pooled level (Faster and Mask R-CNN), "p6p7"
            two strided convolutions (RetinaNet, FCOS).
        min_stride: the finest stride kept when `spec.levels` is not given.
        measure_size: the input size for measuring strides.
    """
    if spec.source == "torchvision" and spec.name.startswith(RESNET_PREFIXES):
        levels = spec.levels or [level for level, stride in ((1, 4), (2, 8), (3, 16), (4, 32)) if stride >= min_stride]
        if spec.trainable_layers is not None:
            trainable = spec.trainable_layers
        else:
            trainable = RESNET_DEFAULT_TRAINABLE if pretrained else 5
        module = resnet_fpn_backbone(
            spec.name,
            weights=weights,
            in_chans=spec.in_chans,
            norm_layer=FrozenBatchNorm2d if spec.frozen_batchnorm else nn.BatchNorm2d,
            levels=levels,
            trainable=trainable,
            extra_blocks=_extra_blocks(extra, out_channels),
            out_channels=out_channels,
        )
    else:
        body = build_selected_features(
            spec, weights=weights, pretrained=pretrained, measure_size=measure_size, min_stride=min_stride
        )
        module = FeaturePyramidBackbone(body, body.channels, out_channels, _extra_blocks(extra, out_channels))
    return module, measure_maps(module, spec.in_chans, measure_size)
