"""The `oriented_detection` task: its manifest, builder, prediction output and drawing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from heads_core.manifest import MAX_CLASSES, MAX_INPUT_SIDE, Label, ManifestBase, default_preprocess
from heads_core.plugins import BuildResult, TaskPlugin
from pydantic import Field, model_validator

from ..manifest import (
    DetectionBackboneSpec,
    DetectionPreprocess,
    check_class_names,
    fixed_input_size,
    input_description,
    is_weight_file,
)
from .geometry import BOX_FORMAT

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor, nn

__all__ = ["ORIENTED_DETECTION", "OrientedDetectionManifest", "OrientedDetectionPlugin", "build_oriented_detector"]

BOX_CONVENTION = (
    "(cx, cy, w, h, angle): centre, width and height in pixels of the input image; angle in radians "
    "in [-pi/2, pi/2); w >= h; a positive angle turns the width axis clockwise on screen from the +x axis "
    "(image y points down)"
)
DEFAULT_MIN_SIZE = 800
DEFAULT_MAX_SIZE = 1333

# Options that only one architecture reads, with the value used when the manifest leaves them out.
_FCOS_DEFAULTS = {"head_convs": 4, "center_sampling_radius": 1.5}
_RETINANET_DEFAULTS = {"anchor_scale": 4.0}

Side = Annotated[int, Field(ge=32, le=MAX_INPUT_SIDE)]


class OrientedDetectionManifest(ManifestBase):
    """Rotated-box detection with an oriented FCOS or RetinaNet on a feature pyramid.

    `num_classes` counts object classes without background, and predicted
    label ids run from 1 to num_classes. The backbone section takes the
    detection options (`levels`, `trainable_layers`, `frozen_batchnorm`);
    without `levels`, the pyramid is built on the levels with stride 8 or
    more, and P6 and P7 are added as in torchvision's RetinaNet and FCOS.
    `preprocess` contains the mean and standard deviation the model normalises
    0..1 images with. The model resizes each image with one factor for both
    axes: the shorter side becomes `min_size` unless the longer side would
    exceed `max_size`, or, with `fixed_size` (height, width), the image is
    fitted into that size and padded. Backbones that accept one input size
    only (ViT, Swin) get it as `fixed_size`.
    """

    task: Literal["oriented_detection"]
    architecture: Literal["fcos", "retinanet"] = "fcos"
    backbone: DetectionBackboneSpec
    num_classes: Annotated[int, Field(ge=1, le=MAX_CLASSES)]
    class_names: list[Label] | None = Field(default=None, max_length=MAX_CLASSES)
    fpn_channels: Annotated[int, Field(ge=32, le=1024, multiple_of=32)] = 256
    min_size: Side | None = None
    max_size: Side | None = None
    fixed_size: tuple[Side, Side] | None = None
    score_threshold: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    nms_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    detections_per_image: Annotated[int, Field(ge=1, le=10_000)] = 100
    candidates_per_level: Annotated[int, Field(ge=1, le=100_000)] = 1000
    head_convs: Annotated[int, Field(ge=1, le=8)] | None = Field(
        default=None, description="FCOS only: convolutions in each subnet; None means 4"
    )
    center_sampling_radius: Annotated[float, Field(gt=0.0, le=10.0)] | None = Field(
        default=None, description="FCOS only: positive locations lie within this many strides of a box's centre; None means 1.5"
    )
    anchor_scale: Annotated[float, Field(gt=0.0, le=64.0)] | None = Field(
        default=None, description="RetinaNet only: the smallest anchor side of a level in strides; None means 4"
    )
    preprocess: DetectionPreprocess | None = None  # type: ignore[assignment]

    # Replaces ManifestBase._fill_preprocess (same name), whose crop-and-resize
    # preprocessing does not apply to detectors.
    @model_validator(mode="after")
    def _fill_preprocess(self) -> OrientedDetectionManifest:
        if self.preprocess is None:
            statistics = default_preprocess(self.backbone)
            object.__setattr__(self, "preprocess", DetectionPreprocess(mean=statistics.mean, std=statistics.std))
        assert self.preprocess is not None
        if len(self.preprocess.mean) != self.backbone.in_chans:
            raise ValueError(
                f"preprocess.mean and preprocess.std have {len(self.preprocess.mean)} values but "
                f"backbone.in_chans is {self.backbone.in_chans}; give one value per input channel"
            )
        return self

    @model_validator(mode="after")
    def _consistent(self) -> OrientedDetectionManifest:
        self._check_names()
        self._check_architecture_options()
        self._fill_sizes()
        if self.backbone.frozen_batchnorm is None:
            object.__setattr__(self.backbone, "frozen_batchnorm", self.backbone.weights is not None)
        return self

    def _check_names(self) -> None:
        check_class_names(self.class_names, self.num_classes)

    def _check_architecture_options(self) -> None:
        other = "retinanet" if self.architecture == "fcos" else "fcos"
        foreign = _RETINANET_DEFAULTS if self.architecture == "fcos" else _FCOS_DEFAULTS
        for option in foreign:
            if getattr(self, option) is not None:
                raise ValueError(
                    f"{option} applies to architecture {other} only, but architecture is {self.architecture}; "
                    f"remove {option} or set architecture: {other}"
                )

    def _fill_sizes(self) -> None:
        needed = fixed_input_size(self.backbone.source, self.backbone.name)
        if self.fixed_size is not None:
            if self.min_size is not None or self.max_size is not None:
                raise ValueError(
                    "fixed_size fits every image into one size, while min_size and max_size set the size from each "
                    "image's own; give fixed_size or min_size and max_size, not both"
                )
            if needed is not None and tuple(self.fixed_size) != needed:
                raise ValueError(
                    f"fixed_size {list(self.fixed_size)} differs from the only input size backbone "
                    f"{self.backbone.name} accepts, {list(needed)}; set fixed_size: {list(needed)}"
                )
            return
        if needed is not None:
            if self.min_size is not None or self.max_size is not None:
                raise ValueError(
                    f"min_size and max_size do not apply because backbone {self.backbone.name} accepts only "
                    f"{needed[0]}x{needed[1]} inputs; remove them, or set fixed_size: [{needed[0]}, {needed[1]}]"
                )
            object.__setattr__(self, "fixed_size", needed)
            return
        min_size = self.min_size if self.min_size is not None else min(DEFAULT_MIN_SIZE, self.max_size or DEFAULT_MIN_SIZE)
        max_size = self.max_size if self.max_size is not None else max(DEFAULT_MAX_SIZE, min_size)
        if min_size > max_size:
            raise ValueError(
                f"min_size {min_size} is larger than max_size {max_size}; the shorter side is scaled to min_size "
                "unless the longer side would exceed max_size, so make min_size <= max_size"
            )
        object.__setattr__(self, "min_size", min_size)
        object.__setattr__(self, "max_size", max_size)

    def option(self, name: str) -> Any:
        """Return an architecture option, or its default when the manifest leaves it out."""
        value = getattr(self, name)
        if value is not None:
            return value
        return {**_FCOS_DEFAULTS, **_RETINANET_DEFAULTS}[name]

    def names(self) -> list[str]:
        """Return the class names by class id from 1, with `class_<id>` where the manifest gives none."""
        return list(self.class_names) if self.class_names else [f"class_{i}" for i in range(1, self.num_classes + 1)]


def build_oriented_detector(manifest: OrientedDetectionManifest, backbone_weights: str | None) -> nn.Module:
    """Construct the oriented detector a manifest describes, loading `backbone_weights` when given.

    Construction reads no other weights and sets no parameter from data, so
    `heads_core.load_model` can run it with parameters on the meta device.
    """
    from ..freezing import set_frozen_batchnorm_eps
    from ..pyramid import MEASURE_SIZE, build_fpn_backbone
    from .models import OrientedFCOS, OrientedRetinaNet

    spec = manifest.backbone
    measure_size = tuple(manifest.fixed_size) if manifest.fixed_size is not None else MEASURE_SIZE
    backbone, layout = build_fpn_backbone(
        spec,
        weights=backbone_weights,
        pretrained=spec.weights is not None,
        extra="p6p7",
        min_stride=8,
        measure_size=measure_size,
        out_channels=manifest.fpn_channels,
    )
    if spec.frozen_batchnorm_eps is not None:
        set_frozen_batchnorm_eps(backbone, spec.frozen_batchnorm_eps)
    assert manifest.preprocess is not None
    options: dict[str, Any] = {
        "num_classes": manifest.num_classes,
        "in_chans": spec.in_chans,
        "min_size": manifest.min_size or 0,
        "max_size": manifest.max_size or 0,
        "fixed_size": tuple(manifest.fixed_size) if manifest.fixed_size is not None else None,
        "image_mean": manifest.preprocess.mean,
        "image_std": manifest.preprocess.std,
        "score_threshold": manifest.score_threshold,
        "nms_threshold": manifest.nms_threshold,
        "detections_per_image": manifest.detections_per_image,
        "candidates_per_level": manifest.candidates_per_level,
    }
    if manifest.architecture == "fcos":
        return OrientedFCOS(
            backbone,
            layout.strides,
            head_convs=manifest.option("head_convs"),
            center_sampling_radius=manifest.option("center_sampling_radius"),
            **options,
        )
    return OrientedRetinaNet(backbone, layout.strides, anchor_scale=manifest.option("anchor_scale"), **options)


class OrientedDetectionPlugin(TaskPlugin):
    """Builds, describes, runs and draws oriented detectors.

    Models take a list of (in_chans, H, W) float images with values in 0..1
    and normalise and resize them internally.
    """

    task = "oriented_detection"
    manifest_type = OrientedDetectionManifest

    def build(self, manifest: OrientedDetectionManifest, *, weights_dir: Path | None, load_weights: bool) -> BuildResult:
        from ..weights import resolve_weights_path

        weights = manifest.backbone.weights if load_weights else None
        if weights is not None and is_weight_file(weights):
            weights = resolve_weights_path(weights, weights_dir)
        return BuildResult(build_oriented_detector(manifest, weights))

    def describe_outputs(self, manifest: OrientedDetectionManifest) -> dict[str, Any]:
        assert manifest.preprocess is not None
        score = (
            "sqrt(sigmoid(class logit) * sigmoid(centerness logit))"
            if manifest.architecture == "fcos"
            else "sigmoid(class logit)"
        )
        return {
            "kind": "oriented_boxes",
            "architecture": manifest.architecture,
            "input": {
                **input_description(manifest),
                "resize": "one scale factor for both axes; with fixed_size the image is fitted and padded",
            },
            "eval": "list of dicts per image: boxes, labels, scores",
            "train": "dict of losses for images and targets with boxes (K, 5) and labels (K,)",
            "box_format": BOX_FORMAT,
            "boxes": "(N, 5) float " + BOX_CONVENTION,
            "labels": "(N,) int64 class ids; num_classes excludes background",
            "label_range": [1, manifest.num_classes],
            "background_label": None,
            "scores": f"(N,) float in 0..1, highest first: {score}",
            "score_threshold": manifest.score_threshold,
            "nms": f"rotated IoU above {manifest.nms_threshold} within a class",
            "class_names": {str(i): name for i, name in enumerate(manifest.names(), start=1)},
        }

    def prepare_image(self, image: Image.Image, manifest: OrientedDetectionManifest) -> Tensor:
        """Convert the image to a (C, H, W) tensor in 0..1 at its own size; the model does the rest."""
        from heads_core.preprocessing import image_to_tensor

        return image_to_tensor(image, manifest.backbone.in_chans)

    def predict(
        self, model: nn.Module, images: list[Tensor], manifest: OrientedDetectionManifest, top_k: int = 5
    ) -> list[dict[str, Any]]:
        """Detect rotated objects; `top_k` is unused because the manifest's score threshold picks detections."""
        import torch

        from .geometry import boxes_to_polygons

        model.eval()
        with torch.inference_mode():
            outputs = model(list(images))
        names = manifest.names()
        results = []
        for output, image in zip(outputs, images):
            polygons = boxes_to_polygons(output["boxes"])
            detections = []
            for box, score, label, polygon in zip(output["boxes"], output["scores"], output["labels"], polygons):
                detections.append(
                    {
                        "class_id": int(label),
                        "class_name": names[int(label) - 1],
                        "score": round(float(score), 6),
                        "box": [round(float(v), 2) for v in box[:4]] + [round(float(box[4]), 6)],
                        "angle_degrees": round(math.degrees(float(box[4])), 3),
                        "polygon": [[round(float(x), 2), round(float(y), 2)] for x, y in polygon],
                    }
                )
            results.append(
                {"image_size": [int(image.shape[-2]), int(image.shape[-1])], "box_format": BOX_FORMAT, "detections": detections}
            )
        return results

    def format_prediction(self, prediction: dict[str, Any], manifest: OrientedDetectionManifest) -> list[str]:
        detections = prediction["detections"]
        if not detections:
            return [f"no detections with score above {manifest.score_threshold}"]
        lines = []
        for row in detections:
            cx, cy, w, h, _ = row["box"]
            lines.append(
                f"{row['score']:7.2%}  {row['class_name']} (id {row['class_id']})  "
                f"centre ({cx:.1f}, {cy:.1f})  size {w:.1f} x {h:.1f}  angle {row['angle_degrees']:+.1f} deg"
            )
        return lines

    def draw(self, image: Image.Image, prediction: dict[str, Any], manifest: OrientedDetectionManifest) -> Image.Image:
        from .drawing import draw_rotated_detections

        return draw_rotated_detections(image, prediction["detections"])


ORIENTED_DETECTION = OrientedDetectionPlugin()
