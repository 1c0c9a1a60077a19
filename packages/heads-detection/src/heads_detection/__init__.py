"""Object detection and instance segmentation for the model zoo.

Registers the `detection` task (Faster R-CNN, RetinaNet, FCOS, SSD, SSDLite)
and the `instance_segmentation` task (Mask R-CNN) with heads-core. Build
through heads-core as for any task::

    import heads_core

    result = heads_core.build_model("zoo-manifests/detection/fasterrcnn-resnet50-coco.yaml")

`num_classes` counts object classes without background; every architecture
predicts label ids 1..num_classes.
"""

from __future__ import annotations

from .architectures import ARCHITECTURES, Architecture
from .manifest import (
    DetectionBackboneSpec,
    DetectionManifest,
    DetectionPreprocess,
    DetectorManifest,
    InstanceSegmentationManifest,
)
from .models import (
    DetectorChecks,
    ZooFasterRCNN,
    ZooFCOS,
    ZooMaskRCNN,
    ZooRetinaNet,
    ZooSSD,
    check_images,
    check_targets,
)
from .pyramid import (
    FeaturePyramidBackbone,
    PyramidLayout,
    SelectedFeatures,
    SimpleFeaturePyramid,
    build_fpn_backbone,
    build_selected_features,
    measure_maps,
)

__version__ = "0.1.0"

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "DetectionBackboneSpec",
    "DetectionManifest",
    "DetectionPreprocess",
    "DetectorChecks",
    "DetectorManifest",
    "FeaturePyramidBackbone",
    "InstanceSegmentationManifest",
    "PyramidLayout",
    "SelectedFeatures",
    "SimpleFeaturePyramid",
    "ZooFCOS",
    "ZooFasterRCNN",
    "ZooMaskRCNN",
    "ZooRetinaNet",
    "ZooSSD",
    "build_fpn_backbone",
    "build_selected_features",
    "check_images",
    "check_targets",
    "measure_maps",
]
