"""SSD and SSDLite feature extractors for any backbone: backbone levels plus extra downsampling blocks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

from .pyramid import SelectedFeatures

__all__ = [
    "SSDLITE_EXTRA_CHANNELS",
    "SSD_EXTRA_CHANNELS",
    "SSDFeatureExtractor",
    "ssd_extra_block",
    "ssdlite_extra_block",
]

# Output channels of the four extra blocks; SSD300 on VGG and SSDLite on MobileNetV3 use these.
SSD_EXTRA_CHANNELS = (512, 256, 256, 256)
SSDLITE_EXTRA_CHANNELS = (512, 256, 256, 128)


def ssd_extra_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Return SSD's extra block: a 1x1 reduction, then a stride-2 3x3 convolution, each with ReLU.

    Padding 1 keeps a 1x1 input at 1x1, so any number of blocks fits any input size.
    """
    middle = max(1, out_channels // 2)
    block = nn.Sequential(
        nn.Conv2d(in_channels, middle, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(middle, out_channels, kernel_size=3, stride=2, padding=1),
        nn.ReLU(inplace=True),
    )
    for layer in block.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.0)
    return block


def ssdlite_extra_block(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """Return SSDLite's extra block: 1x1 reduction, stride-2 depthwise 3x3, 1x1 expansion, each with ReLU6."""
    middle = max(1, out_channels // 2)
    block = nn.Sequential(
        Conv2dNormActivation(in_channels, middle, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
        Conv2dNormActivation(
            middle, middle, kernel_size=3, stride=2, groups=middle, norm_layer=norm_layer, activation_layer=nn.ReLU6
        ),
        Conv2dNormActivation(middle, out_channels, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.ReLU6),
    )
    for layer in block.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.normal_(layer.weight, mean=0.0, std=0.03)
    return block


class SSDFeatureExtractor(nn.Module):
    """Selected backbone maps followed by extra blocks, each halving the last map.

    Returns an ordered dict "0", "1", ...: the backbone maps, then one map per extra block.
    """

    def __init__(self, body: SelectedFeatures, extra: Sequence[nn.Module]) -> None:
        super().__init__()
        self.body = body
        self.extra = nn.ModuleList(extra)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = list(self.body(x))
        last = maps[-1]
        for block in self.extra:
            last = block(last)
            maps.append(last)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))
