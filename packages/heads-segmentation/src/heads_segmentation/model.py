"""The segmentation model: a feature backbone, a decoder head and an optional auxiliary head.

FCN, DeepLabV3 and LRASPP use torchvision's heads (`FCNHead`, `DeepLabHead`,
`LRASPPHead`) and torchvision's module names, so a model built on
torchvision's default backbone has the same state-dict keys and gives the same
outputs as torchvision's `fcn_resnet50`, `deeplabv3_resnet50` or
`lraspp_mobilenet_v3_large`. DeepLabV3+, which torchvision lacks, is
`DeepLabV3PlusHead` below.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.segmentation.deeplabv3 import ASPP, ASPPPooling, DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.models.segmentation.lraspp import LRASPPHead

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "DeepLabV3PlusHead",
    "SegmentationModel",
    "choose_roles",
    "deeplabv3plus_rates",
    "make_model",
]

Architecture = Literal["fcn", "deeplabv3", "deeplabv3plus", "lraspp"]
ARCHITECTURES: tuple[str, ...] = ("fcn", "deeplabv3", "deeplabv3plus", "lraspp")
# The stride of the finer map that each fusing decoder reads: DeepLabV3+ fuses
# a stride-4 map, LRASPP a stride-8 map (torchvision's LRASPP reads
# MobileNetV3's first stride-8 block).
LOW_LEVEL_STRIDE = {"deeplabv3plus": 4, "lraspp": 8}
LRASPP_CHANNELS = 128
DECODER_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


def deeplabv3plus_rates(output_stride: int) -> tuple[int, int, int]:
    """Return DeepLabV3+'s ASPP dilation rates: (6, 12, 18) at stride 16, scaled inversely with the stride."""
    return tuple(max(1, round(rate * 16 / output_stride)) for rate in (6, 12, 18))  # type: ignore[return-value]


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+'s decoder: ASPP on the output map, fused with a projected finer map.

    The ASPP output (256 channels) is upsampled to the finer map's size and
    concatenated with that map projected to 48 channels; two 3x3
    convolutions and a 1x1 convolution to `num_classes` follow. The
    convolutions are plain, not depthwise-separable.

    Input: a dict with "out" (the backbone's last map) and "low" (the finer
    map). Output: logits at the finer map's resolution.
    """

    def __init__(
        self, high_channels: int, low_channels: int, num_classes: int, atrous_rates: Sequence[int]
    ) -> None:
        super().__init__()
        self.aspp = ASPP(high_channels, atrous_rates, DECODER_CHANNELS)
        self.low_project = nn.Sequential(
            nn.Conv2d(low_channels, LOW_LEVEL_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(LOW_LEVEL_CHANNELS),
            nn.ReLU(),
        )
        self.fuse = nn.Sequential(
            nn.Conv2d(DECODER_CHANNELS + LOW_LEVEL_CHANNELS, DECODER_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(DECODER_CHANNELS),
            nn.ReLU(),
            nn.Conv2d(DECODER_CHANNELS, DECODER_CHANNELS, 3, padding=1, bias=False),
            nn.BatchNorm2d(DECODER_CHANNELS),
            nn.ReLU(),
        )
        self.final_conv = nn.Conv2d(DECODER_CHANNELS, num_classes, 1)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        low = features["low"]
        x = self.aspp(features["out"])
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([x, self.low_project(low)], dim=1)
        return self.final_conv(self.fuse(x))


_SINGLE_SAMPLE_HINT = (
    "train with batches of 2 or more images, or put the BatchNorm layers in eval mode to use their running "
    "statistics (for example model.apply(lambda m: m.eval() if isinstance(m, torch.nn.BatchNorm2d) else None))"
)


class SegmentationModel(nn.Module):
    """A segmentation network in torchvision's convention.

    Input: images of shape (N, in_chans, H, W), normalised as the manifest's
    `preprocess` section specifies; H and W are free. Output: an ordered dict with "out",
    the class logits of shape (N, num_classes, H, W), and, when the model has
    an auxiliary classifier, "aux" of the same shape. Softmax over dim 1 gives
    class probabilities, argmax the mask.

    Backbones that need sides of a multiple of `size_divisor` (Swin's patch
    size) get their input zero-padded at the bottom and right; the logits are
    cropped back to H x W.
    """

    def __init__(
        self,
        backbone: nn.Module,
        classifier: nn.Module,
        aux_classifier: nn.Module | None,
        *,
        architecture: str,
        num_classes: int,
        in_chans: int,
        size_divisor: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier
        self.architecture = architecture
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.size_divisor = size_divisor

    def class_tensor_names(self) -> list[str]:
        """Return the state-dict names of the tensors whose size depends on `num_classes`."""
        final = {
            "fcn": ["classifier.4"],
            "deeplabv3": ["classifier.4"],
            "deeplabv3plus": ["classifier.final_conv"],
            "lraspp": ["classifier.low_classifier", "classifier.high_classifier"],
        }[self.architecture]
        if self.aux_classifier is not None:
            final.append("aux_classifier.4")
        return [f"{layer}.{kind}" for layer in final for kind in ("weight", "bias")]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self._check_input(x)
        try:
            return self._forward(x)
        except ValueError as error:
            # BatchNorm raises this when a map has one value per channel in train mode.
            if self.training and "Expected more than 1 value per channel" in str(error):
                raise ValueError(
                    f"{self.architecture} in train mode got {x.shape[0]} image(s) of {x.shape[-2]}x{x.shape[-1]}, "
                    "and a BatchNorm layer saw a single value per channel, but batch statistics need at least "
                    f"two samples; {_SINGLE_SAMPLE_HINT}, or use larger images"
                ) from error
            raise

    def _forward(self, x: Tensor) -> dict[str, Tensor]:
        height, width = x.shape[-2:]
        if self.size_divisor > 1:
            x = F.pad(x, (0, _pad(width, self.size_divisor), 0, _pad(height, self.size_divisor)))
        features = self.backbone(x)
        head_input = features if self.architecture in LOW_LEVEL_STRIDE else features["out"]
        result: dict[str, Tensor] = OrderedDict()
        result["out"] = self._resize(self.classifier(head_input), x.shape[-2:], height, width)
        if self.aux_classifier is not None:
            result["aux"] = self._resize(self.aux_classifier(features["aux"]), x.shape[-2:], height, width)
        return result

    @staticmethod
    def _resize(logits: Tensor, padded: torch.Size, height: int, width: int) -> Tensor:
        logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        if padded != (height, width):
            logits = logits[..., :height, :width]
        return logits

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}; "
                f"the model was built for {self.in_chans} input channels (backbone.in_chans)"
            )
        if not self.training or x.shape[0] > 1:
            return
        for module in self.modules():
            if isinstance(module, ASPPPooling) and any(
                isinstance(layer, nn.modules.batchnorm._BatchNorm) and layer.training for layer in module
            ):
                raise ValueError(
                    f"{self.architecture} in train mode got a batch of 1 image, but the image-pooling branch of "
                    "its ASPP module applies BatchNorm to a 1x1 map, so batch statistics need at least two "
                    f"samples; {_SINGLE_SAMPLE_HINT}"
                )


def _pad(side: int, divisor: int) -> int:
    return math.ceil(side / divisor) * divisor - side


def choose_roles(architecture: str, kind: str, strides: Sequence[int], aux: bool) -> dict[str, int]:
    """Pick the level each decoder input reads, as an index into the backbone's levels.

    The main map is the last level. The finer map of DeepLabV3+ and LRASPP is
    the level, finer than the last, whose stride is nearest to 4 or 8 (the
    finer one on a tie). The auxiliary classifier reads the level before the
    last (ResNet's layer3), or on MobileNetV3 the first block at stride 8, as
    torchvision does.

    Raises:
        ValueError: the backbone lacks a level the decoder needs.
    """
    last = len(strides) - 1
    roles = {"high" if architecture == "lraspp" else "out": last}
    if architecture in LOW_LEVEL_STRIDE:
        target = LOW_LEVEL_STRIDE[architecture]
        finer = [i for i, stride in enumerate(strides) if stride < strides[last]]
        if not finer:
            raise ValueError(
                f"{architecture} fuses the output map with a finer feature map, but every level of this "
                f"backbone has stride {strides[last]} (levels: {list(strides)}); choose a backbone with "
                "several strides (a CNN or Swin), or use architecture fcn or deeplabv3"
            )
        roles["low"] = min(finer, key=lambda i: (abs(math.log2(strides[i] / target)), strides[i], i))
    if aux:
        if architecture == "lraspp":
            raise ValueError("lraspp has no auxiliary classifier; set aux_classifier to false or remove it")
        if len(strides) < 2:
            raise ValueError("the auxiliary classifier reads the level before the last, but this backbone has one level")
        roles["aux"] = last - 3 if kind == "mobilenet_v3" else last - 1
    return roles


def make_model(
    architecture: str,
    backbone: nn.Module,
    channels: Mapping[str, int],
    *,
    num_classes: int,
    output_stride: int,
    in_chans: int,
    size_divisor: int,
) -> SegmentationModel:
    """Put the decoder of `architecture` and, when `channels` has "aux", an FCN auxiliary head on `backbone`.

    Args:
        channels: the channels of each role's map ("out" or "high", "low", "aux").
    """
    classifier: nn.Module
    if architecture == "fcn":
        classifier = FCNHead(channels["out"], num_classes)
    elif architecture == "deeplabv3":
        # torchvision uses rates (12, 24, 36) at output stride 8 and also at 16 (MobileNetV3).
        classifier = DeepLabHead(channels["out"], num_classes)
    elif architecture == "deeplabv3plus":
        classifier = DeepLabV3PlusHead(channels["out"], channels["low"], num_classes, deeplabv3plus_rates(output_stride))
    elif architecture == "lraspp":
        classifier = LRASPPHead(channels["low"], channels["high"], num_classes, LRASPP_CHANNELS)
    else:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of: {', '.join(ARCHITECTURES)}")
    aux_classifier = FCNHead(channels["aux"], num_classes) if "aux" in channels else None
    return SegmentationModel(
        backbone,
        classifier,
        aux_classifier,
        architecture=architecture,
        num_classes=num_classes,
        in_chans=in_chans,
        size_divisor=size_divisor,
    )
