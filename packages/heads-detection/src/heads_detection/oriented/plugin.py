"""The `oriented_detection` task: its manifest, builder, prediction output and drawing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from heads_core.manifest import MAX_CLASSES, MAX_INPUT_SIDE, Label, ManifestBase
from heads_core.plugins import BuildResult, TaskPlugin
from pydantic import Field, model_validator

from .geometry import BOX_FORMAT

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor, nn

__all__ = ["ORIENTED_DETECTION", "OrientedDetectionManifest", "OrientedDetectionPlugin"]

ARCHITECTURES = ("fcos", "retinanet")
BOX_CONVENTION = (
    "(cx, cy, w, h, angle): centre, width and height in pixels of the input image; angle in radians "
    "in [-pi/2, pi/2); w >= h; a positive angle turns the width axis clockwise on screen from the +x axis "
    "(image y points down)"
)

# Options that only one architecture reads, with the value used when the manifest leaves them out.
_FCOS_DEFAULTS = {"head_convs": 4, "center_sampling_radius": 1.5}
_RETINANET_DEFAULTS = {"anchor_scale": 4.0}


class OrientedDetectionManifest(ManifestBase):
    """Rotated-box detection with an oriented FCOS or RetinaNet on a feature pyramid.

    `num_classes` counts object classes without background, and predicted
    label ids run from 1 to num_classes. `preprocess.mean` and `preprocess.std`
    normalise the image inside the model. `preprocess.input_size` and
    `preprocess.resize` are not used: the model resizes each image so that its
    shorter side is `min_size`, unless its longer side would exceed `max_size`.
    """

    task: Literal["oriented_detection"]
    architecture: Literal["fcos", "retinanet"] = "fcos"
    num_classes: Annotated[int, Field(ge=1, le=MAX_CLASSES)]
    class_names: list[Label] | None = Field(default=None, max_length=MAX_CLASSES)
    backbone_levels: list[Annotated[int, Field(ge=0, le=16)]] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="backbone levels fed to the pyramid, 0 being the finest; None takes the coarsest three with stride 8 or more",
    )
    fpn_channels: Annotated[int, Field(ge=32, le=1024, multiple_of=32)] = 256
    extra_levels: Literal[0, 2] = 2
    min_size: Annotated[int, Field(ge=8, le=MAX_INPUT_SIDE)] = 800
    max_size: Annotated[int, Field(ge=8, le=MAX_INPUT_SIDE)] = 1333
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

    @model_validator(mode="after")
    def _consistent(self) -> OrientedDetectionManifest:
        from heads_core.manifest import _check_names

        _check_names(self.class_names, self.num_classes, "class_names", "num_classes")
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) must not exceed max_size ({self.max_size})")
        if self.backbone_levels is not None and list(self.backbone_levels) != sorted(set(self.backbone_levels)):
            raise ValueError(
                f"backbone_levels must be strictly increasing, finest first, got {list(self.backbone_levels)}"
            )
        foreign = _RETINANET_DEFAULTS if self.architecture == "fcos" else _FCOS_DEFAULTS
        for option in foreign:
            if getattr(self, option) is not None:
                other = "retinanet" if self.architecture == "fcos" else "fcos"
                raise ValueError(
                    f"{option} applies to architecture {other} only, but architecture is {self.architecture}; "
                    f"remove {option} or set architecture: {other}"
                )
        return self

    def option(self, name: str) -> Any:
        """Return an architecture option, or its default when the manifest leaves it out."""
        value = getattr(self, name)
        if value is not None:
            return value
        return {**_FCOS_DEFAULTS, **_RETINANET_DEFAULTS}[name]

    def names(self) -> list[str]:
        """Return the class names, by class id from 1; `class_<id>` where the manifest gives none."""
        return list(self.class_names) if self.class_names else [f"class_{i}" for i in range(1, self.num_classes + 1)]


def _resolve_weights(weights: str | None, weights_dir: Path | None) -> str | None:
    from heads_core._weights import is_weight_file

    if weights is None or not is_weight_file(weights) or weights_dir is None or Path(weights).is_absolute():
        return weights
    return str((weights_dir / weights).resolve())


def build_detector(manifest: OrientedDetectionManifest, backbone_weights: str | None) -> nn.Module:
    """Construct the oriented detector a manifest describes, with the given backbone weights."""
    from .models import OrientedFCOS, OrientedRetinaNet
    from .pyramid import create_pyramid_backbone

    spec = manifest.backbone
    pyramid = create_pyramid_backbone(
        spec.source,
        spec.name,
        weights=backbone_weights,
        in_chans=spec.in_chans,
        levels=manifest.backbone_levels,
        out_channels=manifest.fpn_channels,
        extra_levels=manifest.extra_levels,
    )
    assert manifest.preprocess is not None
    options: dict[str, Any] = {
        "num_classes": manifest.num_classes,
        "in_chans": spec.in_chans,
        "min_size": manifest.min_size,
        "max_size": manifest.max_size,
        "image_mean": manifest.preprocess.mean,
        "image_std": manifest.preprocess.std,
        "score_threshold": manifest.score_threshold,
        "nms_threshold": manifest.nms_threshold,
        "detections_per_image": manifest.detections_per_image,
        "candidates_per_level": manifest.candidates_per_level,
    }
    if manifest.architecture == "fcos":
        return OrientedFCOS(
            pyramid,
            head_convs=manifest.option("head_convs"),
            center_sampling_radius=manifest.option("center_sampling_radius"),
            **options,
        )
    return OrientedRetinaNet(pyramid, anchor_scale=manifest.option("anchor_scale"), **options)


# Outline colours of class ids 1, 2, ...; ids past the end reuse the list.
_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)


class OrientedDetectionPlugin(TaskPlugin):
    """Build, run and draw oriented detectors."""

    task = "oriented_detection"
    manifest_type = OrientedDetectionManifest

    def build(self, manifest: OrientedDetectionManifest, *, weights_dir: Path | None, load_weights: bool) -> BuildResult:
        weights = _resolve_weights(manifest.backbone.weights, weights_dir) if load_weights else None
        return BuildResult(build_detector(manifest, weights))

    def describe_outputs(self, manifest: OrientedDetectionManifest) -> dict[str, Any]:
        score = (
            "sqrt(sigmoid(class logit) * sigmoid(centerness logit))"
            if manifest.architecture == "fcos"
            else "sigmoid(class logit)"
        )
        return {
            "kind": "oriented_boxes",
            "architecture": manifest.architecture,
            "input": "list of (C, H, W) float images in [0, 1], any size; the model normalises and resizes them",
            "fields": {"boxes": ["K", 5], "scores": ["K"], "labels": ["K"]},
            "box_format": BOX_FORMAT,
            "box_convention": BOX_CONVENTION,
            "label_ids": [1, manifest.num_classes],
            "background_id": None,
            "class_names": manifest.names(),
            "score": score,
            "score_threshold": manifest.score_threshold,
            "nms_threshold": manifest.nms_threshold,
        }

    def prepare_image(self, image: Image.Image, manifest: OrientedDetectionManifest) -> Tensor:
        """Convert the image to a (C, H, W) tensor in [0, 1] at its own size; the model does the rest."""
        from heads_core.preprocessing import image_to_tensor

        return image_to_tensor(image, manifest.backbone.in_chans)

    def predict(
        self, model: nn.Module, images: list[Tensor], manifest: OrientedDetectionManifest, top_k: int = 5
    ) -> list[dict[str, Any]]:
        """Return every detection of each image; `top_k` is not used, the manifest's thresholds apply."""
        import torch

        from .geometry import boxes_to_polygons

        model.eval()
        with torch.inference_mode():
            outputs = model(list(images))
        names = manifest.names()
        results = []
        for output in outputs:
            polygons = boxes_to_polygons(output["boxes"])
            detections = [
                {
                    "class_id": int(label),
                    "class_name": names[int(label) - 1],
                    "score": float(score),
                    "box": [float(v) for v in box],
                    "angle_degrees": math.degrees(float(box[4])),
                    "polygon": [[float(x), float(y)] for x, y in polygon],
                }
                for box, score, label, polygon in zip(output["boxes"], output["scores"], output["labels"], polygons)
            ]
            results.append({"box_format": BOX_FORMAT, "detections": detections})
        return results

    def format_prediction(self, prediction: dict[str, Any], manifest: OrientedDetectionManifest) -> list[str]:
        detections = prediction["detections"]
        if not detections:
            return [f"no detections with score above {manifest.score_threshold}"]
        lines = []
        for row in detections:
            cx, cy, w, h, _ = row["box"]
            lines.append(
                f"{row['score']:6.1%}  {row['class_name']} (id {row['class_id']})  "
                f"centre ({cx:.1f}, {cy:.1f})  size {w:.1f} x {h:.1f}  angle {row['angle_degrees']:+.1f} deg"
            )
        return lines

    def draw(self, image: Image.Image, prediction: dict[str, Any], manifest: OrientedDetectionManifest) -> Image.Image:
        """Return an RGB copy of `image` with each rotated box outlined and labelled with its class and score."""
        from PIL import ImageDraw

        canvas = image.convert("RGB")
        pen = ImageDraw.Draw(canvas)
        width = max(1, round(min(canvas.size) / 200))
        for row in sorted(prediction["detections"], key=lambda r: r["score"]):
            colour = _PALETTE[(row["class_id"] - 1) % len(_PALETTE)]
            corners = [tuple(point) for point in row["polygon"]]
            pen.line([*corners, corners[0]], fill=colour, width=width)
            # The first edge runs along the width axis; a thicker line marks it.
            pen.line(corners[:2], fill=colour, width=width * 2)
            top = min(corners, key=lambda p: p[1])
            pen.text((top[0], max(0.0, top[1] - 11)), f"{row['class_name']} {row['score']:.2f}", fill=colour)
        return canvas


ORIENTED_DETECTION = OrientedDetectionPlugin()
