"""The models the benchmark measures, each as a zoo manifest beside its anchor.

The anchor of a case is what a user does without the zoo: call the timm or
torchvision builder for the same architecture. Cases are plain data so that
the parent process can hand them to worker processes as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Class counts of the pretrained heads these architectures usually carry.
IMAGENET_CLASSES = 1000
COCO_OBJECT_CLASSES = 90
VOC_CLASSES = 21

# Load-time speed-up targets: the anchor's time divided by the zoo's.
DEFAULT_MIN_SPEEDUP = 5.0
SWIN_MIN_SPEEDUP = 3.0


@dataclass(frozen=True)
class Anchor:
    """A library builder call: `timm.create_model(name, **kwargs)` or `torchvision.models.get_model(name, **kwargs)`."""

    library: str
    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCase:
    """One architecture built both ways.

    Attributes:
        key: short identifier used on the command line and in file names.
        label: what the row shows.
        manifest: the zoo manifest, as the mapping a manifest file holds.
        anchor: the library builder of the same architecture.
        package: the import name the zoo side needs (the task's package).
        min_speedup: the load target, anchor time divided by zoo time.
    """

    key: str
    label: str
    manifest: dict[str, Any]
    anchor: Anchor
    package: str = "heads_core"
    min_speedup: float = DEFAULT_MIN_SPEEDUP

    def to_json(self) -> dict[str, Any]:
        """Return the case as a JSON-ready mapping."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCase:
        """Rebuild a case from `to_json`'s output."""
        return cls(**{**data, "anchor": Anchor(**data["anchor"])})


def classification_case(key: str, timm_name: str, min_speedup: float = DEFAULT_MIN_SPEEDUP) -> ModelCase:
    """Return a timm backbone with a ClassificationHead, against timm's own model with the same class count."""
    manifest = {
        "name": f"bench-{key.replace('_', '-')}",
        "version": "1.0.0",
        "task": "classification",
        "backbone": {"source": "timm", "name": timm_name},
        "num_classes": IMAGENET_CLASSES,
    }
    anchor = Anchor("timm", timm_name, {"num_classes": IMAGENET_CLASSES})
    return ModelCase(key, f"timm {timm_name} + ClassificationHead", manifest, anchor, "heads_core", min_speedup)


FASTER_RCNN = ModelCase(
    key="faster_rcnn",
    label="Faster R-CNN ResNet-50 FPN",
    manifest={
        "name": "bench-faster-rcnn",
        "version": "1.0.0",
        "task": "detection",
        "architecture": "faster_rcnn",
        "backbone": {"source": "torchvision", "name": "resnet50"},
        "num_classes": COCO_OBJECT_CLASSES,
    },
    # The zoo's num_classes counts object classes; torchvision's adds background.
    anchor=Anchor(
        "torchvision",
        "fasterrcnn_resnet50_fpn",
        {"weights": None, "weights_backbone": None, "num_classes": COCO_OBJECT_CLASSES + 1},
    ),
    package="heads_detection",
)

DEEPLABV3 = ModelCase(
    key="deeplabv3",
    label="DeepLabV3 ResNet-50",
    manifest={
        "name": "bench-deeplabv3",
        "version": "1.0.0",
        "task": "segmentation",
        "architecture": "deeplabv3",
        "backbone": {"source": "torchvision", "name": "resnet50"},
        "num_classes": VOC_CLASSES,
    },
    anchor=Anchor(
        "torchvision",
        "deeplabv3_resnet50",
        {"weights": None, "weights_backbone": None, "num_classes": VOC_CLASSES, "aux_loss": False},
    ),
    package="heads_segmentation",
)

LOAD_CASES = (
    FASTER_RCNN,
    DEEPLABV3,
    classification_case("vit_base", "vit_base_patch16_224"),
    classification_case("swin_tiny", "swin_tiny_patch4_window7_224", SWIN_MIN_SPEEDUP),
)

FORWARD_CASES = (
    classification_case("resnet50", "resnet50"),
    classification_case("convnext_tiny", "convnext_tiny"),
    classification_case("vit_small", "vit_small_patch16_224"),
)

# timm's test_* models have a few thousand parameters; they exercise every
# code path of the benchmark in seconds.
SMOKE_LOAD_CASES = (classification_case("test_vit", "test_vit"),)
SMOKE_FORWARD_CASES = (classification_case("test_resnet", "test_resnet"),)

# The forward pass is timed on a batch of this many images of the model's input size.
FORWARD_BATCH = 8
