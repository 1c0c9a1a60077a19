"""torchvision's detectors with the zoo's input checks and label convention.

Each class adds no module and no tensor to its torchvision base, so state
dicts keep torchvision's names. The classifiers have num_classes + 1 outputs:
index 0 is background and object classes are 1..num_classes for every
architecture. RetinaNet and FCOS score every class with a sigmoid, so their
background output is masked out before post-processing; no architecture
ever predicts label 0.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.ssd import SSD

__all__ = [
    "DetectorChecks",
    "ZooFCOS",
    "ZooFasterRCNN",
    "ZooMaskRCNN",
    "ZooRetinaNet",
    "ZooSSD",
    "check_images",
    "check_targets",
]


def check_images(images: Any, in_chans: int) -> list[Tensor]:
    """Return `images` as a list of (C, H, W) float tensors, or raise naming the first bad one.

    A 4-D batch tensor is split into its images.
    """
    if isinstance(images, Tensor):
        if images.dim() != 4:
            raise ValueError(
                f"expected a list of (C, H, W) images or one (N, C, H, W) batch, got a tensor of shape "
                f"{tuple(images.shape)}"
            )
        images = list(images.unbind(0))
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError(f"expected a non-empty list of (C, H, W) image tensors, got {type(images).__name__}")
    for index, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dim() != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"image {index} must be a (C, H, W) tensor, got {shape}")
        if image.shape[0] != in_chans:
            raise ValueError(
                f"image {index} has {image.shape[0]} channels (shape {tuple(image.shape)}), but the detector "
                f"was built for {in_chans} (backbone.in_chans); convert the image to {in_chans} channels, "
                f"or build the model with backbone.in_chans: {image.shape[0]}"
            )
        if not image.is_floating_point():
            raise ValueError(
                f"image {index} has dtype {image.dtype}; detectors take float images with values in 0..1, "
                "for example uint8 images divided by 255"
            )
    return list(images)


def check_targets(
    targets: Any, images: list[Tensor], num_classes: int, *, with_masks: bool
) -> list[dict[str, Tensor]]:
    """Check training targets and return copies with int64 labels.

    Each target needs `boxes` (N, 4) as (x1, y1, x2, y2) pixels with x1 < x2
    and y1 < y2, and `labels` (N,) with ids 1..num_classes; N may be 0. Mask
    R-CNN also needs `masks` (N, H, W) of the image's size.
    """
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        count = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"expected one target dict per image ({len(images)}), got {count}")
    checked = []
    for index, target in enumerate(targets):
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"target {index} must be a dict with 'boxes' and 'labels' tensors")
        boxes, labels = target["boxes"], target["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"target {index}: boxes must be a float tensor of shape (N, 4), got {shape}")
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise ValueError(f"target {index}: labels must have shape ({boxes.shape[0]},), one per box, got {shape}")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"target {index}: labels must be integer class ids, got dtype {labels.dtype}")
        bad = labels[(labels < 1) | (labels > num_classes)]
        if bad.numel():
            raise ValueError(
                f"target {index} has label {int(bad[0])}, outside the allowed range 1..{num_classes}: label ids "
                f"count object classes from 1 to num_classes ({num_classes}) and 0 is reserved for background; "
                "renumber the dataset's classes or raise num_classes"
            )
        degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
        if degenerate.any():
            box = [round(float(v), 3) for v in boxes[degenerate][0]]
            raise ValueError(
                f"target {index} has box {box} with zero or negative width or height; boxes are "
                "(x1, y1, x2, y2) with x1 < x2 and y1 < y2, so drop or fix it"
            )
        copy = dict(target)
        copy["labels"] = labels.to(torch.int64)
        if with_masks:
            _check_masks(index, target.get("masks"), boxes.shape[0], images[index])
        checked.append(copy)
    return checked


def _check_masks(index: int, masks: Any, count: int, image: Tensor) -> None:
    expected = (count, image.shape[-2], image.shape[-1])
    if not isinstance(masks, Tensor) or tuple(masks.shape) != expected:
        shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
        raise ValueError(
            f"target {index}: Mask R-CNN needs 'masks' of shape {expected} (one image-sized mask per box), got {shape}"
        )


class DetectorChecks:
    """Input checks in front of a torchvision detector's forward pass.

    Attributes:
        num_object_classes: object classes without background; labels are 1..num_object_classes.
        in_chans: channels every input image must have.
    """

    num_object_classes: int
    in_chans: int
    training: bool

    def forward(self, images: Any, targets: Any = None) -> Any:
        checked_images = check_images(images, self.in_chans)
        if self.training and targets is None:
            raise ValueError(
                "the model is in training mode and needs targets (boxes and labels per image) to compute "
                "losses; call model.eval() to get detections instead"
            )
        checked_targets = None
        if targets is not None:
            checked_targets = check_targets(
                targets, checked_images, self.num_object_classes, with_masks=isinstance(self, MaskRCNN)
            )
        return super().forward(checked_images, checked_targets)  # type: ignore[misc]


class _MaskedBackground:
    """Post-processing that never reports the sigmoid classifier's background output (label 0)."""

    def postprocess_detections(self, head_outputs: dict[str, list[Tensor]], *args: Any) -> Any:
        masked = []
        for logits in head_outputs["cls_logits"]:
            logits = logits.clone()
            logits[..., 0] = float("-inf")
            masked.append(logits)
        return super().postprocess_detections({**head_outputs, "cls_logits": masked}, *args)  # type: ignore[misc]


def _label_attributes(model: Any, num_object_classes: int, in_chans: int) -> None:
    model.num_object_classes = num_object_classes
    model.in_chans = in_chans


class ZooFasterRCNN(DetectorChecks, FasterRCNN):
    """torchvision's FasterRCNN with input checks; `num_object_classes` excludes background."""

    def __init__(self, backbone: Any, *, num_object_classes: int, in_chans: int, **kwargs: Any) -> None:
        FasterRCNN.__init__(self, backbone, num_classes=num_object_classes + 1, **kwargs)
        _label_attributes(self, num_object_classes, in_chans)


class ZooMaskRCNN(DetectorChecks, MaskRCNN):
    """torchvision's MaskRCNN with input checks; `num_object_classes` excludes background."""

    def __init__(self, backbone: Any, *, num_object_classes: int, in_chans: int, **kwargs: Any) -> None:
        MaskRCNN.__init__(self, backbone, num_classes=num_object_classes + 1, **kwargs)
        _label_attributes(self, num_object_classes, in_chans)


class ZooRetinaNet(DetectorChecks, _MaskedBackground, RetinaNet):
    """torchvision's RetinaNet with input checks and no background detections."""

    def __init__(self, backbone: Any, *, num_object_classes: int, in_chans: int, **kwargs: Any) -> None:
        RetinaNet.__init__(self, backbone, num_object_classes + 1, **kwargs)
        _label_attributes(self, num_object_classes, in_chans)


class ZooFCOS(DetectorChecks, _MaskedBackground, FCOS):
    """torchvision's FCOS with input checks and no background detections."""

    def __init__(self, backbone: Any, *, num_object_classes: int, in_chans: int, **kwargs: Any) -> None:
        FCOS.__init__(self, backbone, num_object_classes + 1, **kwargs)
        _label_attributes(self, num_object_classes, in_chans)


class ZooSSD(DetectorChecks, SSD):
    """torchvision's SSD (and SSDLite) with input checks; `num_object_classes` excludes background."""

    def __init__(
        self, backbone: Any, anchor_generator: Any, size: tuple[int, int], *, num_object_classes: int, in_chans: int, **kwargs: Any
    ) -> None:
        SSD.__init__(self, backbone, anchor_generator, size, num_object_classes + 1, **kwargs)
        _label_attributes(self, num_object_classes, in_chans)
