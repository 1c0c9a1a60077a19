"""The detection architectures: their torchvision defaults and which tensors depend on the class count."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARCHITECTURES", "Architecture", "architecture_info"]


@dataclass(frozen=True)
class Architecture:
    """One detection architecture and the defaults torchvision's builder gives it.

    Attributes:
        name: the manifest's `architecture` value.
        task: the task that builds it.
        default_backbone: the torchvision model torchvision's builder puts under it.
        coco_weights: the torchvision weights enum of the full model on its
            default backbone, in `torchvision.models.detection`.
        zero_eps_weights: members of `coco_weights` that torchvision loads with
            every FrozenBatchNorm2d epsilon set to 0.
        class_dependent: state-dict name prefixes of the layers whose shape
            follows the class count; they are initialised anew when
            pretrained weights have another class count.
        score_threshold, nms_threshold, detections_per_image: torchvision's
            post-processing defaults.
        fixed_size: the (height, width) every image is resized to, or None
            when images keep their aspect ratio (min_size and max_size).
        uses_fpn: whether the backbone feeds a feature pyramid network.
    """

    name: str
    task: str
    default_backbone: str
    coco_weights: str
    zero_eps_weights: tuple[str, ...]
    class_dependent: tuple[str, ...]
    score_threshold: float
    nms_threshold: float
    detections_per_image: int
    fixed_size: tuple[int, int] | None
    uses_fpn: bool


ARCHITECTURES: dict[str, Architecture] = {
    "faster_rcnn": Architecture(
        name="faster_rcnn",
        task="detection",
        default_backbone="resnet50",
        coco_weights="FasterRCNN_ResNet50_FPN_Weights",
        zero_eps_weights=("COCO_V1",),
        class_dependent=("roi_heads.box_predictor.",),
        score_threshold=0.05,
        nms_threshold=0.5,
        detections_per_image=100,
        fixed_size=None,
        uses_fpn=True,
    ),
    "retinanet": Architecture(
        name="retinanet",
        task="detection",
        default_backbone="resnet50",
        coco_weights="RetinaNet_ResNet50_FPN_Weights",
        zero_eps_weights=("COCO_V1",),
        class_dependent=("head.classification_head.cls_logits.",),
        score_threshold=0.05,
        nms_threshold=0.5,
        detections_per_image=300,
        fixed_size=None,
        uses_fpn=True,
    ),
    "fcos": Architecture(
        name="fcos",
        task="detection",
        default_backbone="resnet50",
        coco_weights="FCOS_ResNet50_FPN_Weights",
        zero_eps_weights=(),
        class_dependent=("head.classification_head.cls_logits.",),
        score_threshold=0.2,
        nms_threshold=0.6,
        detections_per_image=100,
        fixed_size=None,
        uses_fpn=True,
    ),
    "ssd": Architecture(
        name="ssd",
        task="detection",
        default_backbone="vgg16",
        coco_weights="SSD300_VGG16_Weights",
        zero_eps_weights=(),
        class_dependent=("head.classification_head.",),
        score_threshold=0.01,
        nms_threshold=0.45,
        detections_per_image=200,
        fixed_size=(300, 300),
        uses_fpn=False,
    ),
    "ssdlite": Architecture(
        name="ssdlite",
        task="detection",
        default_backbone="mobilenet_v3_large",
        coco_weights="SSDLite320_MobileNet_V3_Large_Weights",
        zero_eps_weights=(),
        # Only the last 1x1 convolution of each prediction block has
        # class-count channels; the depthwise convolution before it does not.
        class_dependent=("head.classification_head.module_list.",),
        score_threshold=0.001,
        nms_threshold=0.55,
        detections_per_image=300,
        fixed_size=(320, 320),
        uses_fpn=False,
    ),
    "mask_rcnn": Architecture(
        name="mask_rcnn",
        task="instance_segmentation",
        default_backbone="resnet50",
        coco_weights="MaskRCNN_ResNet50_FPN_Weights",
        zero_eps_weights=("COCO_V1",),
        class_dependent=("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
        score_threshold=0.05,
        nms_threshold=0.5,
        detections_per_image=100,
        fixed_size=None,
        uses_fpn=True,
    ),
}


def architecture_info(name: str) -> Architecture:
    """Return the architecture called `name`, or raise naming the choices."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
