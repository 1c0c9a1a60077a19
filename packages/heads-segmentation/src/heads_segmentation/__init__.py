"""Semantic segmentation for the model zoo: FCN, DeepLabV3, DeepLabV3+ and LRASPP.

The `segmentation` task is registered with heads-core through the
`heads_core.tasks` entry-point group, so `heads_core.build_model`,
`save_model`, `load_model` and the `zoo` command handle segmentation
manifests once this package is installed.
"""

from __future__ import annotations

from .manifest import SegmentationBackboneSpec, SegmentationManifest
from .masks import class_colors, decode_mask, encode_mask, overlay_mask
from .model import ARCHITECTURES, DeepLabV3PlusHead, SegmentationModel
from .plugin import SEGMENTATION, SegmentationPlugin, build_segmentation_model

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "SEGMENTATION",
    "DeepLabV3PlusHead",
    "SegmentationBackboneSpec",
    "SegmentationManifest",
    "SegmentationModel",
    "SegmentationPlugin",
    "build_segmentation_model",
    "class_colors",
    "decode_mask",
    "encode_mask",
    "overlay_mask",
]
