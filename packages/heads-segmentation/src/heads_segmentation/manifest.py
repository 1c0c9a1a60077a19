"""The segmentation manifest: decoder, backbone with output stride, classes and weights."""

from __future__ import annotations

from typing import Annotated, Literal

from heads_core.manifest import (
    BackboneSpec,
    Label,
    ManifestBase,
    _check_names,
    default_preprocess,
)
from pydantic import Field, StringConstraints, model_validator

from ._backbones import StrideUnavailableError, backbone_kind, default_stride, layout_at
from .model import Architecture, choose_roles

__all__ = [
    "DEFAULT_INPUT_SIDE",
    "MAX_SEGMENTATION_CLASSES",
    "PREFERRED_STRIDES",
    "SegmentationBackboneSpec",
    "SegmentationManifest",
    "torchvision_builder",
]

# Masks are written as 16-bit PNG images, so class ids must fit in 16 bits.
MAX_SEGMENTATION_CLASSES = 65536
# torchvision's segmentation weights resize the shorter side to 520 pixels.
DEFAULT_INPUT_SIDE = 520
# The output stride used when the manifest gives none: torchvision's choice
# for FCN and DeepLabV3 on ResNets (8), and 16 for DeepLabV3+ and LRASPP.
PREFERRED_STRIDES = {"fcn": 8, "deeplabv3": 8, "deeplabv3plus": 16, "lraspp": 16}
# The output stride of torchvision's segmentation weights for each backbone kind.
TORCHVISION_STRIDES = {"resnet": 8, "mobilenet_v3": 16}


class SegmentationBackboneSpec(BackboneSpec):
    """A backbone with the output stride of its last feature map.

    `output_stride` None means the decoder's default: 8 for fcn and
    deeplabv3, 16 for deeplabv3plus and lraspp, or the nearest larger stride
    the backbone can give. Validation fills in the chosen value.
    """

    output_stride: Annotated[int, Field(ge=1, le=64)] | None = None

    @model_validator(mode="after")
    def _stride_available(self) -> SegmentationBackboneSpec:
        if self.output_stride is not None:
            try:
                layout_at(self.source, self.name, self.output_stride)
            except StrideUnavailableError as error:
                raise ValueError(str(error)) from None
        return self


def torchvision_builder(architecture: str, backbone: BackboneSpec) -> str | None:
    """Return torchvision's builder name for this decoder and backbone (`deeplabv3_resnet50`), or None."""
    if backbone.source != "torchvision":
        return None
    import torchvision.models as tv_models

    name = f"{architecture}_{backbone.name}"
    return name if name in tv_models.list_models(module=tv_models.segmentation) else None


class SegmentationManifest(ManifestBase):
    """Semantic segmentation: per-pixel logits over `num_classes` classes.

    `weights` sets the whole model's weights: None for random initialisation
    (or `backbone.weights` only), a torchvision weights name of the
    decoder-backbone pair ("DEFAULT", "COCO_WITH_VOC_LABELS_V1"), or the path
    of a state-dict or safetensors file relative to the manifest's folder.
    Without `preprocess`, images keep their aspect ratio with the shorter side
    resized to 520 pixels.
    """

    task: Literal["segmentation"]
    architecture: Architecture
    backbone: SegmentationBackboneSpec
    num_classes: Annotated[int, Field(ge=1, le=MAX_SEGMENTATION_CLASSES)]
    class_names: list[Label] | None = Field(default=None, max_length=MAX_SEGMENTATION_CLASSES)
    aux_classifier: bool = False
    weights: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SegmentationManifest:
        _check_names(self.class_names, self.num_classes, "class_names", "num_classes")
        if self.aux_classifier and self.architecture == "lraspp":
            raise ValueError("aux_classifier: lraspp has no auxiliary classifier; set aux_classifier to false or remove it")
        if self.weights is not None and self.backbone.weights is not None:
            raise ValueError(
                f"weights ({self.weights!r}) sets the whole model, backbone included, so backbone.weights "
                f"({self.backbone.weights!r}) would be overwritten; give only one of the two"
            )
        if self.backbone.output_stride is None:
            stride = default_stride(self.backbone.source, self.backbone.name, PREFERRED_STRIDES[self.architecture])
            object.__setattr__(self, "backbone", self.backbone.model_copy(update={"output_stride": stride}))
        assert self.backbone.output_stride is not None
        layout = layout_at(self.backbone.source, self.backbone.name, self.backbone.output_stride)
        kind = backbone_kind(self.backbone.source, self.backbone.name)
        choose_roles(self.architecture, kind, layout.strides, self.aux_classifier)
        if self.weights is not None:
            self._check_weights_name(kind)
        if "preprocess" not in self.model_fields_set:
            preprocess = default_preprocess(self.backbone)
            side = DEFAULT_INPUT_SIDE
            object.__setattr__(self, "preprocess", preprocess.model_copy(update={"input_size": (side, side), "resize": side}))
        return self

    def _check_weights_name(self, kind: str) -> None:
        from heads_core._weights import is_weight_file

        assert self.weights is not None and self.backbone.output_stride is not None
        if is_weight_file(self.weights):
            return
        builder = torchvision_builder(self.architecture, self.backbone)
        if builder is None:
            import torchvision.models as tv_models

            pairs = ", ".join(tv_models.list_models(module=tv_models.segmentation))
            raise ValueError(
                f"weights {self.weights!r} names torchvision weights, but torchvision has no segmentation weights "
                f"for {self.architecture} on {self.backbone.source} {self.backbone.name}; it has them for: {pairs}; "
                "give a weights file path instead, or use backbone.weights for a pretrained backbone"
            )
        import torchvision.models as tv_models

        members = [member.name for member in tv_models.get_model_weights(builder)]
        if self.weights not in ("DEFAULT", *members):
            raise ValueError(
                f"weights {self.weights!r} is not a weights name of torchvision {builder}; choose one of: "
                + ", ".join(["DEFAULT", *members])
            )
        expected = TORCHVISION_STRIDES[kind]
        if self.backbone.output_stride != expected:
            raise ValueError(
                f"torchvision's {builder} weights were trained at output stride {expected}, but "
                f"backbone.output_stride is {self.backbone.output_stride}; set it to {expected} or remove it"
            )
