"""Manifests of the `detection` and `instance_segmentation` tasks.

Both tasks share `DetectorManifest`: an architecture, a backbone with
detection options, `num_classes` object classes (background not counted),
optional full-model weights and the image-size and post-processing settings.
Defaults that depend on the architecture are filled in during validation, so
a checkpoint's embedded manifest states every value the model was built with.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from heads_core._backbones import fixed_input_size
from heads_core.manifest import (
    MAX_CLASSES,
    MAX_INPUT_SIDE,
    BackboneSpec,
    Label,
    ManifestBase,
    StrictModel,
    default_preprocess,
)
from pydantic import Field, model_validator

from .architectures import ARCHITECTURES, Architecture

__all__ = [
    "DetectionBackboneSpec",
    "DetectionManifest",
    "DetectionPreprocess",
    "DetectorManifest",
    "InstanceSegmentationManifest",
    "coco_weights_members",
    "is_weight_file",
]

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
MAX_LEVELS = 8
DEFAULT_MIN_SIZE = 800
DEFAULT_MAX_SIZE = 1333

# Normalisation torchvision's builders use for their default backbones.
_SSD_VGG_MEAN = (0.48235, 0.45882, 0.40784)
_SSD_VGG_STD = (1.0 / 255.0,) * 3
_SSDLITE_MEAN = (0.5, 0.5, 0.5)
_SSDLITE_STD = (0.5, 0.5, 0.5)

Side = Annotated[int, Field(ge=32, le=MAX_INPUT_SIDE)]


def is_weight_file(value: str) -> bool:
    """Tell whether a `weights` value names a file instead of a torchvision enum member.

    The rule is heads-core's rule for backbone weights: a known weights suffix
    or a path separator makes a file.
    """
    return value.endswith(WEIGHT_FILE_SUFFIXES) or "/" in value or os.sep in value


def coco_weights_members(architecture: Architecture) -> dict[str, str]:
    """Map each member name of the architecture's torchvision weights enum to its download URL."""
    from torchvision.models import detection

    enum = getattr(detection, architecture.coco_weights)
    return {member.name: member.url for member in enum}


def coco_member_name(architecture: Architecture, weights: str) -> str:
    """Return the enum member that `weights` names ("DEFAULT" resolved), or raise naming the choices."""
    from torchvision.models import detection

    enum = getattr(detection, architecture.coco_weights)
    prefix, _, member = weights.rpartition(".")
    if prefix and prefix != architecture.coco_weights:
        raise ValueError(
            f"weights {weights!r} names the enum {prefix}, but {architecture.name} on its default backbone "
            f"uses {architecture.coco_weights}; write a member such as {architecture.coco_weights}.DEFAULT"
        )
    members = [m.name for m in enum]
    if member in ("DEFAULT", "default"):
        return enum.DEFAULT.name
    if member not in members:
        raise ValueError(
            f"weights {weights!r} is not a member of torchvision's {architecture.coco_weights}; choose one of: "
            + ", ".join(["DEFAULT", *members])
            + ", or give the path of a weights file"
        )
    return member


def _per_channel(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Size RGB statistics for `in_chans` channels as heads-core does: the mean for extra or fewer channels."""
    if in_chans == len(values):
        return values
    average = sum(values) / len(values)
    if in_chans < len(values):
        return (average,) * in_chans
    return values + (average,) * (in_chans - len(values))


def check_class_names(names: list[str] | None, num_classes: int) -> None:
    """Raise ValueError unless `names` is None or has one unique name per object class."""
    if names is None:
        return
    if len(names) != num_classes:
        raise ValueError(
            f"class_names has {len(names)} entries but num_classes is {num_classes}; give one name per "
            "object class, without a background entry"
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class_names repeats {', '.join(map(repr, duplicates))}; names must be unique")


def input_description(manifest: Any) -> dict[str, Any]:
    """Return the `input` entry of a detector's `zoo.outputs`: what images the model expects."""
    return {
        "images": "list of (C, H, W) float tensors with values in 0..1",
        "channels": manifest.backbone.in_chans,
        "mean": list(manifest.preprocess.mean),
        "std": list(manifest.preprocess.std),
        "min_size": manifest.min_size,
        "max_size": manifest.max_size,
        "fixed_size": list(manifest.fixed_size) if manifest.fixed_size else None,
    }


class DetectionBackboneSpec(BackboneSpec):
    """The backbone of a detector, with the options detection adds.

    `levels` picks feature levels, counted from 0 at the finest stride the
    backbone has (see `heads_core.create_feature_backbone`); None lets the
    architecture choose. `trainable_layers` is the number of backbone stages,
    counted from the deepest, whose weights train; None trains every stage
    of a randomly initialised backbone and uses torchvision's default with
    pretrained weights. `frozen_batchnorm` replaces batch norms by
    FrozenBatchNorm2d; None freezes them exactly when pretrained weights are
    given (SSDLite never freezes them, as in torchvision).
    `frozen_batchnorm_eps` sets every frozen batch norm's epsilon; None keeps
    each layer's own, except with torchvision's COCO_V1 weights of Faster
    R-CNN, Mask R-CNN and RetinaNet, which torchvision runs with epsilon 0.
    """

    levels: list[Annotated[int, Field(ge=0, le=31)]] | None = Field(default=None, min_length=1, max_length=MAX_LEVELS)
    trainable_layers: Annotated[int, Field(ge=0, le=64)] | None = None
    frozen_batchnorm: bool | None = None
    frozen_batchnorm_eps: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _increasing_levels(self) -> DetectionBackboneSpec:
        if self.levels is not None and any(b <= a for a, b in zip(self.levels, self.levels[1:])):
            raise ValueError(
                f"levels {self.levels} must be strictly increasing, finest level first, for example [1, 2, 3]"
            )
        return self


class DetectionPreprocess(StrictModel):
    """The per-channel mean and standard deviation the model normalises 0..1 images with.

    Detectors resize images themselves (`min_size`, `max_size`, `fixed_size`),
    so there is no crop or resize here.
    """

    mean: tuple[Annotated[float, Field(ge=-1e3, le=1e3, allow_inf_nan=False)], ...] = Field(min_length=1)
    std: tuple[Annotated[float, Field(gt=0, le=1e3, allow_inf_nan=False)], ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_lengths(self) -> DetectionPreprocess:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}; give one per channel")
        return self


class DetectorManifest(ManifestBase):
    """Fields shared by detection and instance-segmentation manifests.

    `num_classes` counts object classes without background; the model
    predicts label ids 1..num_classes and 0 is reserved for background.
    `weights` loads a whole pretrained detector. It is a member of
    torchvision's weights enum of the architecture (for example "COCO_V1" or
    "DEFAULT", only on the default backbone), the path of a state-dict file,
    or an earlier zoo checkpoint of the same architecture and backbone.
    Layers whose shape follows the class count are initialised anew when the
    count differs.

    `proposals_per_image` (Faster and Mask R-CNN only) caps the region
    proposals kept per feature level before and per image after the RPN's
    non-maximum suppression; None keeps torchvision's 2000 in training and
    1000 in evaluation.
    """

    architecture: str
    backbone: DetectionBackboneSpec
    num_classes: Annotated[int, Field(ge=1, le=MAX_CLASSES)]
    class_names: list[Label] | None = Field(default=None, max_length=MAX_CLASSES)
    weights: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    min_size: Side | None = None
    max_size: Side | None = None
    fixed_size: tuple[Side, Side] | None = None
    score_threshold: Annotated[float, Field(ge=0.0, lt=1.0)] | None = None
    nms_threshold: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    detections_per_image: Annotated[int, Field(ge=1, le=10_000)] | None = None
    proposals_per_image: Annotated[int, Field(ge=1, le=100_000)] | None = None
    preprocess: DetectionPreprocess | None = None  # type: ignore[assignment]

    @property
    def info(self) -> Architecture:
        """The architecture's defaults and class-dependent layers."""
        return ARCHITECTURES[self.architecture]

    @property
    def uses_default_backbone(self) -> bool:
        """Whether the backbone is the torchvision model torchvision's builder uses."""
        return self.backbone.source == "torchvision" and self.backbone.name == self.info.default_backbone

    # Replaces ManifestBase._fill_preprocess (same name), whose crop-and-resize
    # preprocessing does not apply to detectors.
    @model_validator(mode="after")
    def _fill_preprocess(self) -> DetectorManifest:
        if self.preprocess is None:
            mean, std = self._default_statistics()
            object.__setattr__(self, "preprocess", DetectionPreprocess(mean=mean, std=std))
        assert self.preprocess is not None
        if len(self.preprocess.mean) != self.backbone.in_chans:
            raise ValueError(
                f"preprocess.mean and preprocess.std have {len(self.preprocess.mean)} values but "
                f"backbone.in_chans is {self.backbone.in_chans}; give one value per input channel"
            )
        return self

    def _default_statistics(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        in_chans = self.backbone.in_chans
        if self.architecture == "ssd" and self.backbone.source == "torchvision" and self.backbone.name.startswith("vgg"):
            return _per_channel(_SSD_VGG_MEAN, in_chans), _per_channel(_SSD_VGG_STD, in_chans)
        if self.architecture == "ssdlite" and self.backbone.source == "torchvision" and self.backbone.name.startswith("mobilenet_v3"):
            return _per_channel(_SSDLITE_MEAN, in_chans), _per_channel(_SSDLITE_STD, in_chans)
        statistics = default_preprocess(self.backbone)
        return tuple(statistics.mean), tuple(statistics.std)

    @model_validator(mode="after")
    def _check_and_fill(self) -> DetectorManifest:
        self._check_names()
        self._check_weights()
        if self.proposals_per_image is not None and self.architecture not in ("faster_rcnn", "mask_rcnn"):
            raise ValueError(
                f"proposals_per_image is {self.proposals_per_image}, but {self.architecture} has no region proposal "
                "network; remove it, or use faster_rcnn or mask_rcnn"
            )
        self._fill_sizes()
        info = self.info
        for field, default in (
            ("score_threshold", info.score_threshold),
            ("nms_threshold", info.nms_threshold),
            ("detections_per_image", info.detections_per_image),
        ):
            if getattr(self, field) is None:
                object.__setattr__(self, field, default)
        self._fill_batchnorm()
        return self

    def _check_names(self) -> None:
        check_class_names(self.class_names, self.num_classes)

    def _check_weights(self) -> None:
        if self.weights is None:
            return
        if self.backbone.weights is not None:
            raise ValueError(
                f"weights ({self.weights!r}) and backbone.weights ({self.backbone.weights!r}) are both set, but "
                "full-model weights replace every backbone tensor; remove backbone.weights"
            )
        if is_weight_file(self.weights):
            return
        if not self.uses_default_backbone:
            raise ValueError(
                f"weights {self.weights!r} names torchvision's pretrained {self.architecture}, which exists only "
                f"on the torchvision backbone {self.info.default_backbone!r}, not on "
                f"{self.backbone.source}:{self.backbone.name}; use that backbone, or give a weights file path"
            )
        canonical = coco_member_name(self.info, self.weights)
        object.__setattr__(self, "weights", f"{self.info.coco_weights}.{canonical}")

    def _fill_sizes(self) -> None:
        needed = fixed_input_size(self.backbone.source, self.backbone.name)
        if self.fixed_size is None:
            fixed = needed or self.info.fixed_size
            if fixed is not None and (self.min_size is not None or self.max_size is not None):
                reason = (
                    f"backbone {self.backbone.name} accepts only {fixed[0]}x{fixed[1]} inputs"
                    if needed
                    else f"{self.architecture} resizes every image to one size"
                )
                raise ValueError(
                    f"min_size and max_size do not apply here because {reason}; remove them, or set "
                    f"fixed_size: [{fixed[0]}, {fixed[1]}] to choose that size"
                )
            object.__setattr__(self, "fixed_size", fixed)
        elif self.min_size is not None or self.max_size is not None:
            raise ValueError(
                "fixed_size resizes every image to one size, while min_size and max_size keep the aspect "
                "ratio; give fixed_size or min_size and max_size, not both"
            )
        if self.fixed_size is not None:
            if needed is not None and tuple(self.fixed_size) != needed:
                raise ValueError(
                    f"fixed_size {list(self.fixed_size)} differs from the only input size backbone "
                    f"{self.backbone.name} accepts, {list(needed)}; set fixed_size: {list(needed)}"
                )
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

    def _fill_batchnorm(self) -> None:
        backbone = self.backbone
        if backbone.frozen_batchnorm is None:
            pretrained = self.weights is not None or backbone.weights is not None
            object.__setattr__(backbone, "frozen_batchnorm", pretrained and self.architecture != "ssdlite")
        if backbone.frozen_batchnorm_eps is None and backbone.frozen_batchnorm and self._weights_run_with_zero_eps():
            object.__setattr__(backbone, "frozen_batchnorm_eps", 0.0)

    def _weights_run_with_zero_eps(self) -> bool:
        """Check whether `weights` is a torchvision file that torchvision runs with batch-norm epsilon 0."""
        if self.weights is None or not self.uses_default_backbone:
            return False
        urls = coco_weights_members(self.info)
        if is_weight_file(self.weights):
            names = {os.path.basename(urls[m]) for m in self.info.zero_eps_weights}
            return os.path.basename(self.weights) in names
        return self.weights.rpartition(".")[2] in self.info.zero_eps_weights

    def image_size_limits(self) -> tuple[int, int]:
        """Return the (min_size, max_size) pair for torchvision's GeneralizedRCNNTransform."""
        if self.fixed_size is not None:
            return min(self.fixed_size), max(self.fixed_size)
        assert self.min_size is not None and self.max_size is not None
        return self.min_size, self.max_size


class DetectionManifest(DetectorManifest):
    """Object detection: boxes, labels 1..num_classes and scores per image."""

    task: Literal["detection"]
    architecture: Literal["faster_rcnn", "retinanet", "fcos", "ssd", "ssdlite"]


class InstanceSegmentationManifest(DetectorManifest):
    """Instance segmentation: boxes, labels, scores and one mask per object.

    `mask_threshold` turns mask probabilities into the binary masks that
    predictions report and draw.
    """

    task: Literal["instance_segmentation"]
    architecture: Literal["mask_rcnn"] = "mask_rcnn"
    mask_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5

