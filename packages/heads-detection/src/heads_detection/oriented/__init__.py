"""Oriented (rotated-box) detection: the `oriented_detection` task.

Boxes are (cx, cy, w, h, angle) in pixels and radians, with w >= h and the
angle in [-pi/2, pi/2), turning the width axis clockwise on screen; see
`geometry`. The detectors are torchvision's FCOS and RetinaNet with an
`OrientedDetectionHead` that predicts one angle per location or anchor. They
train with a Gaussian (KLD) box loss and a pi-periodic angle loss, see `models`.
"""

from __future__ import annotations

from .geometry import (
    BOX_FORMAT,
    boxes_from_torchvision,
    boxes_to_polygons,
    boxes_to_torchvision,
    decode_boxes,
    encode_boxes,
    normalize_boxes,
    polygons_to_boxes,
    wrap_angle,
)
from .head import OrientedDetectionHead
from .iou import batched_rotated_nms, elementwise_rotated_iou, pairwise_rotated_iou, rotated_nms
from .loss import angle_loss, kld_box_loss
from .models import OrientedDetector, OrientedFCOS, OrientedRetinaNet
from .plugin import ORIENTED_DETECTION, OrientedDetectionManifest, build_oriented_detector
from .synthetic import SyntheticRectangles

__all__ = [
    "BOX_FORMAT",
    "ORIENTED_DETECTION",
    "OrientedDetectionHead",
    "OrientedDetectionManifest",
    "OrientedDetector",
    "OrientedFCOS",
    "OrientedRetinaNet",
    "SyntheticRectangles",
    "angle_loss",
    "batched_rotated_nms",
    "boxes_from_torchvision",
    "boxes_to_polygons",
    "boxes_to_torchvision",
    "build_oriented_detector",
    "decode_boxes",
    "elementwise_rotated_iou",
    "encode_boxes",
    "kld_box_loss",
    "normalize_boxes",
    "pairwise_rotated_iou",
    "polygons_to_boxes",
    "rotated_nms",
    "wrap_angle",
]
