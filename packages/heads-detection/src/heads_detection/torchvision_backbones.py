"""The backbones torchvision's detection builders use, built the same way.

ResNets go through torchvision's `BackboneWithFPN`, VGG through
`SSDFeatureExtractorVGG` and MobileNetV3 through
`SSDLiteFeatureExtractorMobileNet`, so state-dict names match torchvision's
COCO weights and outputs match torchvision's builders. Stage freezing follows
torchvision's `trainable_backbone_layers`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from heads_core import WeightsNotFoundError, read_state_dict, replace_first_conv
from torch import Tensor, nn

from .manifest import is_weight_file

logger = logging.getLogger(__name__)

__all__ = [
    "RESNET_PREFIXES",
    "create_torchvision_classifier",
    "mobilenet_ssdlite_extractor",
    "resnet_fpn_backbone",
    "torchvision_cache_path",
    "vgg_ssd_extractor",
]

RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")

# torchvision's default number of trainable stages when pretrained weights are given.
RESNET_DEFAULT_TRAINABLE = 3
VGG_DEFAULT_TRAINABLE = 4


def torchvision_cache_path(url: str) -> Path:
    """Return where torch hub keeps the file downloaded from `url` (TORCH_HOME sets the folder)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def read_torchvision_weights(name: str, weights: str) -> dict[str, Tensor]:
    """Read backbone weights: a torchvision enum member of model `name` from the cache, or a file.

    Nothing is downloaded.

    Raises:
        WeightsNotFoundError: the cached file or the given file is missing.
        ValueError: `weights` is not a member of the model's weights enum.
    """
    if is_weight_file(weights):
        return read_state_dict(weights)
    from torchvision import models

    enum = models.get_model_weights(name)
    member_name = weights.rpartition(".")[2]
    members = {m.name: m for m in enum}
    if member_name in ("DEFAULT", "default"):
        member = enum.DEFAULT
    elif member_name in members:
        member = members[member_name]
    else:
        raise ValueError(
            f"backbone.weights {weights!r} is not a member of torchvision's {enum.__name__}; choose one of: "
            + ", ".join(["DEFAULT", *members])
            + ", or give the path of a weights file"
        )
    path = torchvision_cache_path(member.url)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{enum.__name__}.{member.name}",
            [str(path)],
            "put the file there (TORCH_HOME sets the folder), or give the file path as backbone.weights",
        )
    return read_state_dict(path)


def create_torchvision_classifier(name: str, weights: str | None, **kwargs: Any) -> nn.Module:
    """Build torchvision classifier `name` with `kwargs` and load its weights, if any, strictly."""
    from torchvision import models

    model = models.get_model(name, weights=None, **kwargs)
    if weights is None:
        return model
    state = read_torchvision_weights(name, weights)
    expected = set(model.state_dict())
    state = {k: v for k, v in state.items() if k in expected or not k.endswith("num_batches_tracked")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"backbone.weights {weights} do not fit torchvision {name}: missing {sorted(missing)[:10]}, "
            f"unexpected {sorted(unexpected)[:10]}; give weights of that exact model"
        )
    logger.info("loaded backbone weights %s into torchvision %s", weights, name)
    return model


def _check_trainable(trainable: int, maximum: int, backbone: str) -> None:
    if not 0 <= trainable <= maximum:
        raise ValueError(
            f"backbone.trainable_layers is {trainable}, but {backbone} has {maximum} stages; choose a value "
            f"from 0 (whole backbone frozen) to {maximum} (everything trains)"
        )


def resnet_fpn_backbone(
    name: str,
    *,
    weights: str | None,
    in_chans: int,
    norm_layer: Callable[..., nn.Module],
    levels: Sequence[int],
    trainable: int,
    extra_blocks: nn.Module,
    out_channels: int = 256,
) -> nn.Module:
    """Build torchvision's ResNet feature pyramid (`BackboneWithFPN`) on ResNet `name`.

    `levels` are heads-core level indices: 1 to 4 are layer1 to layer4
    (strides 4 to 32); level 0, the stride-2 stem, cannot feed the pyramid.
    `trainable` counts stages from layer4 back to conv1 (0 to 5), as in
    torchvision's `trainable_backbone_layers`.
    """
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    if min(levels) < 1 or max(levels) > 4:
        raise ValueError(
            f"backbone.levels {list(levels)} are not available on torchvision {name} in a feature pyramid; "
            "choose levels from 1 (layer1, stride 4) to 4 (layer4, stride 32)"
        )
    _check_trainable(trainable, 5, f"torchvision {name}")
    resnet = create_torchvision_classifier(name, weights, norm_layer=norm_layer)
    if in_chans != 3:
        replace_first_conv(resnet, in_chans)
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        layers_to_train.append("bn1")
    for parameter_name, parameter in resnet.named_parameters():
        if not parameter_name.startswith(tuple(layers_to_train)):
            parameter.requires_grad_(False)
    return_layers = {f"layer{level}": str(index) for index, level in enumerate(levels)}
    stage_channels = {f"layer{k}": resnet.get_submodule(f"layer{k}")[-1] for k in range(1, 5)}
    in_channels = [_block_out_channels(stage_channels[f"layer{level}"]) for level in levels]
    return BackboneWithFPN(resnet, return_layers, in_channels, out_channels, extra_blocks=extra_blocks)


def _block_out_channels(block: nn.Module) -> int:
    """Return the output channels of a ResNet BasicBlock (conv2) or Bottleneck (conv3)."""
    last_conv = getattr(block, "conv3", None) or block.conv2
    return int(last_conv.out_channels)


def vgg_ssd_extractor(name: str, *, weights: str | None, pretrained: bool, in_chans: int, trainable: int | None) -> nn.Module:
    """Build torchvision's SSD300 feature extractor on VGG `name`.

    `trainable` counts VGG's five convolution stages from the deepest
    (0 to 5); None trains four when the manifest names pretrained weights
    (`pretrained`, whether or not `weights` are loaded now) and all five
    otherwise, as torchvision does.
    """
    from torchvision.models.detection.ssd import SSDFeatureExtractorVGG

    vgg = create_torchvision_classifier(name, weights)
    if in_chans != 3:
        replace_first_conv(vgg, in_chans)
    features = vgg.features
    stage_starts = [0] + [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)][:-1]
    if trainable is None:
        trainable = VGG_DEFAULT_TRAINABLE if pretrained else len(stage_starts)
    _check_trainable(trainable, len(stage_starts), f"torchvision {name}")
    freeze_before = len(features) if trainable == 0 else stage_starts[len(stage_starts) - trainable]
    for layer in features[:freeze_before]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
    return SSDFeatureExtractorVGG(features, highres=False)


def ssdlite_norm_layer() -> Callable[..., nn.Module]:
    """Return the batch norm torchvision's SSDLite uses in its backbone, extra layers and head."""
    return partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)


def mobilenet_ssdlite_extractor(
    name: str,
    *,
    weights: str | None,
    reduced_tail: bool,
    in_chans: int,
    trainable: int | None,
    norm_layer: Callable[..., nn.Module],
) -> nn.Module:
    """Build torchvision's SSDLite feature extractor on MobileNetV3 `name`.

    torchvision gives the backbone MobileNetV3's reduced tail exactly when no
    backbone weights are named, so the caller derives `reduced_tail` from the
    manifest, not from whether `weights` are loaded now. Without weights the
    convolutions get torchvision's normal(0, 0.03) initialisation.
    `trainable` counts MobileNet stages from the deepest; None trains all.
    """
    from torchvision.models.detection.ssdlite import SSDLiteFeatureExtractorMobileNet

    mobilenet = create_torchvision_classifier(name, weights, norm_layer=norm_layer, reduced_tail=reduced_tail)
    if weights is None:
        for layer in mobilenet.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, mean=0.0, std=0.03)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0.0)
    if in_chans != 3:
        replace_first_conv(mobilenet, in_chans)
    features = mobilenet.features
    # Stage boundaries: the stem, every block that halves the resolution, and the last layer.
    stage_starts = [0] + [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)] + [len(features) - 1]
    if trainable is None:
        trainable = len(stage_starts)
    _check_trainable(trainable, len(stage_starts), f"torchvision {name}")
    freeze_before = len(features) if trainable == 0 else stage_starts[len(stage_starts) - trainable]
    for block in features[:freeze_before]:
        for parameter in block.parameters():
            parameter.requires_grad_(False)
    return SSDLiteFeatureExtractorMobileNet(features, stage_starts[-2], norm_layer)
