"""The angle head, and the FCOS and RetinaNet heads that carry it.

`OrientedDetectionHead` is one 3x3 convolution, shared by every pyramid level,
that predicts one raw angle per anchor (RetinaNet) or location (FCOS). The
detector heads below feed it the last feature maps of their box-regression
subnet, so the angle is read from the same features as the box sides.

Every head returns flattened outputs of shape (N, H*W*A, ...) per level, in
the anchor order of torchvision's `AnchorGenerator`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSRegressionHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetRegressionHead

__all__ = ["OrientedDetectionHead", "OrientedFCOSHead", "OrientedRetinaNetHead", "flatten_level"]


def flatten_level(output: Tensor, values_per_anchor: int) -> Tensor:
    """Reshape one level's (N, A * K, H, W) map into (N, H * W * A, K)."""
    n, _, height, width = output.shape
    output = output.view(n, -1, values_per_anchor, height, width).permute(0, 3, 4, 1, 2)
    return output.reshape(n, -1, values_per_anchor)


class OrientedDetectionHead(nn.Module):
    """Angle prediction on pyramid features: one raw angle per anchor per location.

    Args:
        in_channels: channels of every input map.
        num_anchors: anchors per location (1 for FCOS).

    Forward takes one (N, in_channels, H, W) map per level and returns one
    (N, num_anchors, H, W) map of raw angles per level. `decode_boxes` turns
    raw angles into radians.
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.angle_pred = nn.Conv2d(in_channels, num_anchors, kernel_size=3, padding=1)
        nn.init.normal_(self.angle_pred.weight, std=0.01)
        nn.init.zeros_(self.angle_pred.bias)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [self.angle_pred(f) for f in features]


class _FCOSRegressionTower(FCOSRegressionHead):
    """torchvision's FCOS regression head, returning raw side values and the tower's features.

    torchvision applies ReLU to the side distances; the rotated coder takes
    log distances instead, so the raw outputs are returned.
    """

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:  # type: ignore[override]
        features = [self.conv(level) for level in x]
        regression = [flatten_level(self.bbox_reg(f), 4) for f in features]
        centerness = [flatten_level(self.bbox_ctrness(f), 1) for f in features]
        return regression, centerness, features


class _RetinaNetRegressionTower(RetinaNetRegressionHead):
    """torchvision's RetinaNet regression head, also returning the tower's features."""

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:  # type: ignore[override]
        features = [self.conv(level) for level in x]
        return [flatten_level(self.bbox_reg(f), 4) for f in features], features


class OrientedFCOSHead(nn.Module):
    """FCOS classification, regression and centerness subnets plus the angle head.

    Forward returns per-level lists: "cls_logits" (N, HW, num_classes),
    "bbox_regression" (N, HW, 5) holding four log side distances and the raw
    angle, and "bbox_ctrness" (N, HW, 1).
    """

    def __init__(self, in_channels: int, num_classes: int, num_convs: int) -> None:
        super().__init__()
        self.classification_head = FCOSClassificationHead(in_channels, 1, num_classes, num_convs)
        self.regression_head = _FCOSRegressionTower(in_channels, 1, num_convs)
        self.angle_head = OrientedDetectionHead(in_channels, 1)
        self.num_classes = num_classes

    def forward(self, x: list[Tensor]) -> dict[str, list[Tensor]]:
        logits = [flatten_level(self.classification_head.cls_logits(self.classification_head.conv(f)), self.num_classes) for f in x]
        regression, centerness, features = self.regression_head(x)
        angles = [flatten_level(a, 1) for a in self.angle_head(features)]
        boxes = [torch.cat((r, a), dim=-1) for r, a in zip(regression, angles)]
        return {"cls_logits": logits, "bbox_regression": boxes, "bbox_ctrness": centerness}


class OrientedRetinaNetHead(nn.Module):
    """RetinaNet classification and regression subnets plus the angle head.

    Forward returns per-level lists: "cls_logits" (N, HWA, num_classes) and
    "bbox_regression" (N, HWA, 5) holding four box deltas and the raw angle.
    """

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, norm_layer: Callable[..., nn.Module] | None) -> None:
        super().__init__()
        self.classification_head = RetinaNetClassificationHead(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        self.regression_head = _RetinaNetRegressionTower(in_channels, num_anchors, norm_layer=norm_layer)
        self.angle_head = OrientedDetectionHead(in_channels, num_anchors)
        self.num_classes = num_classes

    def forward(self, x: list[Tensor]) -> dict[str, list[Tensor]]:
        logits = [flatten_level(self.classification_head.cls_logits(self.classification_head.conv(f)), self.num_classes) for f in x]
        regression, features = self.regression_head(x)
        angles = [flatten_level(a, 1) for a in self.angle_head(features)]
        boxes = [torch.cat((r, a), dim=-1) for r, a in zip(regression, angles)]
        return {"cls_logits": logits, "bbox_regression": boxes}

