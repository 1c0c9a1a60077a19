"""Oriented FCOS and oriented RetinaNet: torchvision's detectors with an angle per box.

Both models take a list of (C, H, W) images with values in [0, 1], of any
sizes, like torchvision's detectors. `OrientedTransform` normalises them and
resizes them with one scale factor for both axes: the shorter side becomes
`min_size` unless the longer side would exceed `max_size`, or, with
`fixed_size`, the image is fitted into that size and padded.

Training mode takes targets, one dict per image, and returns the losses:
    boxes:  float (K, 5) rotated boxes (cx, cy, w, h, angle) in pixels of the
            input image and radians, see `geometry`; K may be 0.
    labels: int64 (K,) class ids in 1..num_classes; there is no background id.

Eval mode returns one dict per image with "boxes" (K, 5) in the same
convention and canonical form (w >= h, angle in [-pi/2, pi/2)), "scores" (K,)
and "labels" (K,) in 1..num_classes, by decreasing score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import box_iou, sigmoid_focal_loss

from ..models import check_images
from .geometry import BoxCodingStyle, box_frame_offsets, decode_boxes, enclosing_boxes, encode_boxes, normalize_boxes
from .head import OrientedFCOSHead, OrientedRetinaNetHead
from .iou import batched_rotated_nms
from .loss import angle_loss, kld_box_loss
from .transform import OrientedTransform, scale_boxes

__all__ = ["OrientedDetector", "OrientedFCOS", "OrientedRetinaNet"]


class OrientedDetector(nn.Module):
    """What oriented FCOS and RetinaNet share: input checks, resizing, anchors and post-processing.

    `backbone` returns one map per pyramid level, finest first, as a list or
    an ordered dict, each with `backbone.out_channels` channels. `strides`
    are the levels' measured strides. Subclasses set `box_coding`, build
    `head`, and implement `match`, `compute_loss` and `level_scores`.
    """

    box_coding: BoxCodingStyle

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        anchor_generator: AnchorGenerator,
        *,
        num_classes: int,
        in_chans: int,
        min_size: int,
        max_size: int,
        fixed_size: tuple[int, int] | None,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        score_threshold: float,
        nms_threshold: float,
        detections_per_image: int,
        candidates_per_level: int,
    ) -> None:
        super().__init__()
        if len(image_mean) != in_chans or len(image_std) != in_chans:
            raise ValueError(
                f"image_mean and image_std need one value per input channel ({in_chans}), "
                f"got {len(image_mean)} and {len(image_std)}"
            )
        self.backbone = backbone
        self.head = head
        self.anchor_generator = anchor_generator
        self.transform = OrientedTransform(min_size, max_size, image_mean, image_std, fixed_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.detections_per_image = detections_per_image
        self.candidates_per_level = candidates_per_level

    # --- input checks ---------------------------------------------------

    def _checked_target(self, target: dict[str, Tensor], index: int) -> tuple[Tensor, Tensor]:
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise ValueError(f"target {index} must be a dict with 'boxes' (K, 5) and 'labels' (K,)")
        boxes, labels = target["boxes"], target["labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 5 or not boxes.is_floating_point():
            raise ValueError(
                f"target {index}: boxes must be a float tensor of shape (K, 5) holding (cx, cy, w, h, angle) "
                f"in pixels and radians, got dtype {boxes.dtype} and shape {tuple(boxes.shape)}"
            )
        if labels.shape != (boxes.shape[0],) or labels.dtype != torch.int64:
            raise ValueError(
                f"target {index}: labels must be an int64 tensor of shape ({boxes.shape[0]},), one per box, "
                f"got dtype {labels.dtype} and shape {tuple(labels.shape)}"
            )
        if not torch.isfinite(boxes).all():
            raise ValueError(f"target {index}: boxes contain NaN or infinite values; remove or fix those boxes")
        small = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
        if small.any():
            row = int(small.nonzero()[0, 0])
            raise ValueError(
                f"target {index}: box {row} has width {float(boxes[row, 2])} and height {float(boxes[row, 3])}; "
                "both sides must be positive; drop boxes without area"
            )
        bad = (labels < 1) | (labels > self.num_classes)
        if bad.any():
            label = int(labels[bad][0])
            raise ValueError(
                f"target {index}: label {label} is outside 1..{self.num_classes}; label ids run from 1 to "
                f"num_classes ({self.num_classes}) and there is no background id; renumber the classes"
            )
        return normalize_boxes(boxes), labels

    # --- forward --------------------------------------------------------

    def run_head(self, images: list[Tensor]) -> tuple[dict[str, list[Tensor]], list[list[Tensor]], list[tuple[int, int]]]:
        """Return the raw head outputs, the anchors per image and level, and the resized image sizes."""
        image_list = self.transform(check_images(images, self.in_chans))
        features = self.backbone(image_list.tensors)
        if isinstance(features, dict):
            features = list(features.values())
        outputs = self.head(features)
        anchors = self.anchor_generator(image_list, features)
        counts = [level.shape[1] for level in outputs["cls_logits"]]
        per_level = [list(a.split(counts)) for a in anchors]
        return outputs, per_level, list(image_list.image_sizes)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        images = check_images(images, self.in_chans)
        checked: list[tuple[Tensor, Tensor]] = []
        if self.training:
            if targets is None:
                raise ValueError("in train mode the model needs targets; pass one dict per image or call model.eval()")
            if len(targets) != len(images):
                raise ValueError(f"got {len(images)} images but {len(targets)} targets; pass one target per image")
            checked = [self._checked_target(t, i) for i, t in enumerate(targets)]
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        outputs, anchors, sizes = self.run_head(images)
        if self.training:
            scaled = [(scale_boxes(boxes, old, new), labels) for (boxes, labels), old, new in zip(checked, original_sizes, sizes)]
            return self.compute_loss(outputs, anchors, scaled)
        detections = self.postprocess(outputs, anchors)
        for detection, old, new in zip(detections, original_sizes, sizes):
            detection["boxes"] = scale_boxes(detection["boxes"], new, old)
        return detections

    # --- subclass hooks ---------------------------------------------------

    def compute_loss(
        self, outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]], targets: list[tuple[Tensor, Tensor]]
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def level_scores(self, outputs: dict[str, list[Tensor]], image: int, level: int) -> Tensor:
        """Return the (anchors, num_classes) scores of one image at one level."""
        raise NotImplementedError

    # --- post-processing ----------------------------------------------------

    def postprocess(self, outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]]) -> list[dict[str, Tensor]]:
        """Keep confident candidates per level, decode them and suppress overlaps per class."""
        detections = []
        for image, image_anchors in enumerate(anchors):
            boxes, scores, labels = [], [], []
            for level, level_anchors in enumerate(image_anchors):
                level_scores = self.level_scores(outputs, image, level).flatten()
                candidates = (level_scores > self.score_threshold).nonzero().flatten()
                top = level_scores[candidates].topk(min(self.candidates_per_level, candidates.numel()))
                candidates = candidates[top.indices]
                anchor_index = torch.div(candidates, self.num_classes, rounding_mode="floor")
                regression = outputs["bbox_regression"][level][image][anchor_index]
                boxes.append(decode_boxes(regression, level_anchors[anchor_index], self.box_coding))
                scores.append(top.values)
                labels.append(candidates % self.num_classes + 1)
            all_boxes, all_scores, all_labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = batched_rotated_nms(all_boxes, all_scores, all_labels, self.nms_threshold, self.detections_per_image)
            detections.append({"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]})
        return detections


def _cat_levels(levels: list[Tensor]) -> Tensor:
    return torch.cat(levels, dim=1)


class OrientedFCOS(OrientedDetector):
    """FCOS with rotated boxes: per-location classes, side distances along the box axes, centerness and angle.

    Locations are the centres of torchvision's one-anchor-per-location
    generator, with anchor side equal to the level's stride. A location is
    positive for a ground-truth box when three things hold, as in torchvision's
    FCOS. It lies inside the rotated box, within `center_sampling_radius`
    strides of the box's centre along both box axes. Its largest side distance
    falls in the level's range: 4 to 8 strides, open at the finest and the
    coarsest level. Ties go to the smaller box.

    Losses: sigmoid focal loss over classes, the KLD box loss and the
    pi-periodic angle loss, both weighted by the centerness target, and binary
    cross-entropy on centerness.
    """

    box_coding: BoxCodingStyle = "ltrb"

    def __init__(
        self,
        backbone: nn.Module,
        strides: Sequence[int],
        *,
        num_classes: int,
        head_convs: int = 4,
        center_sampling_radius: float = 1.5,
        **options: object,
    ) -> None:
        if backbone.out_channels % 32:
            raise ValueError(
                f"FCOS heads use GroupNorm with 32 groups, so the pyramid channels must be a multiple of 32, "
                f"got {backbone.out_channels}"
            )
        anchor_generator = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        head = OrientedFCOSHead(backbone.out_channels, num_classes, head_convs)
        super().__init__(backbone, head, anchor_generator, num_classes=num_classes, **options)  # type: ignore[arg-type]
        self.center_sampling_radius = center_sampling_radius

    def level_scores(self, outputs: dict[str, list[Tensor]], image: int, level: int) -> Tensor:
        logits = outputs["cls_logits"][level][image]
        centerness = outputs["bbox_ctrness"][level][image]
        return torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(centerness))

    def match(self, anchors: list[Tensor], boxes: Tensor) -> Tensor:
        """Return the matched ground-truth index of every location of one image, or -1."""
        all_anchors = torch.cat(anchors)
        if boxes.shape[0] == 0:
            return torch.full((all_anchors.shape[0],), -1, dtype=torch.int64, device=all_anchors.device)
        points = (all_anchors[:, :2] + all_anchors[:, 2:]) / 2
        sides = all_anchors[:, 2] - all_anchors[:, 0]
        offsets = box_frame_offsets(points[:, None, :], boxes[None, :, :]).abs()
        half_w, half_h = boxes[None, :, 2] / 2, boxes[None, :, 3] / 2
        inside = (offsets[..., 0] < half_w) & (offsets[..., 1] < half_h)
        central = offsets.amax(dim=-1) < self.center_sampling_radius * sides[:, None]
        largest_distance = torch.maximum(half_w + offsets[..., 0], half_h + offsets[..., 1])
        lower, upper = sides * 4, sides * 8
        lower[: anchors[0].shape[0]] = 0
        upper[-anchors[-1].shape[0] :] = float("inf")
        in_range = (largest_distance > lower[:, None]) & (largest_distance < upper[:, None])
        candidate = inside & central & in_range
        areas = boxes[:, 2] * boxes[:, 3]
        preference = torch.where(candidate, -areas[None, :], torch.full_like(candidate, -math.inf, dtype=areas.dtype))
        best, matched = preference.max(dim=1)
        matched[best == -math.inf] = -1
        return matched

    def compute_loss(
        self, outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]], targets: list[tuple[Tensor, Tensor]]
    ) -> dict[str, Tensor]:
        logits = _cat_levels(outputs["cls_logits"])
        regression = _cat_levels(outputs["bbox_regression"])
        centerness = _cat_levels(outputs["bbox_ctrness"])[..., 0]
        class_targets = torch.zeros_like(logits)
        positive_regression, positive_centerness, positive_anchors, positive_boxes = [], [], [], []
        for image, ((boxes, labels), image_anchors) in enumerate(zip(targets, anchors)):
            matched = self.match(image_anchors, boxes)
            positive = (matched >= 0).nonzero().flatten()
            class_targets[image, positive, labels[matched[positive]] - 1] = 1.0
            positive_regression.append(regression[image, positive])
            positive_centerness.append(centerness[image, positive])
            positive_anchors.append(torch.cat(image_anchors)[positive])
            positive_boxes.append(boxes[matched[positive]])
        num_positive = max(1, sum(p.shape[0] for p in positive_boxes))
        loss_classes = sigmoid_focal_loss(logits, class_targets, reduction="sum") / num_positive

        regression_p, anchors_p = torch.cat(positive_regression), torch.cat(positive_anchors)
        boxes_p, centerness_p = torch.cat(positive_boxes), torch.cat(positive_centerness)
        if boxes_p.shape[0] == 0:
            zero = regression.sum() * 0.0
            return {"classification": loss_classes, "bbox_regression": zero, "bbox_angle": zero, "bbox_ctrness": zero}
        log_distances = encode_boxes(boxes_p, anchors_p, "ltrb")[:, :4]
        # sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) written with log distances.
        centerness_target = torch.exp(
            -0.5 * ((log_distances[:, 0] - log_distances[:, 2]).abs() + (log_distances[:, 1] - log_distances[:, 3]).abs())
        )
        predicted = decode_boxes(regression_p, anchors_p, "ltrb")
        weight_sum = centerness_target.sum().clamp(min=1e-6)
        loss_boxes = (kld_box_loss(predicted, boxes_p) * centerness_target).sum() / weight_sum
        loss_angle = (angle_loss(regression_p[:, 4], boxes_p) * centerness_target).sum() / weight_sum
        loss_centerness = F.binary_cross_entropy_with_logits(centerness_p, centerness_target, reduction="sum") / num_positive
        return {
            "classification": loss_classes,
            "bbox_regression": loss_boxes,
            "bbox_angle": loss_angle,
            "bbox_ctrness": loss_centerness,
        }


class OrientedRetinaNet(OrientedDetector):
    """RetinaNet with rotated boxes: axis-aligned anchors regress a rotated box and its angle.

    Anchors are matched to ground-truth boxes by the IoU of the anchor with the
    box's enclosing axis-aligned rectangle: 0.5 or more is positive, under 0.4
    negative, in between ignored, and every box keeps its best anchors, as in
    torchvision's RetinaNet. The anchor side is `anchor_scale` times the level's
    stride, times 2^0, 2^(1/3) and 2^(2/3), with aspect ratios 0.5, 1 and 2.

    Losses: sigmoid focal loss over classes, the KLD box loss and the pi-periodic angle loss.
    """

    box_coding: BoxCodingStyle = "delta"

    def __init__(
        self,
        backbone: nn.Module,
        strides: Sequence[int],
        *,
        num_classes: int,
        anchor_scale: float = 4.0,
        **options: object,
    ) -> None:
        if backbone.out_channels % 32:
            raise ValueError(
                f"the RetinaNet heads use GroupNorm with 32 groups, so the pyramid channels must be a multiple "
                f"of 32, got {backbone.out_channels}"
            )
        sizes = tuple(
            tuple(anchor_scale * stride * 2 ** (octave / 3) for octave in range(3)) for stride in strides
        )
        anchor_generator = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        num_anchors = anchor_generator.num_anchors_per_location()[0]
        head = OrientedRetinaNetHead(backbone.out_channels, num_anchors, num_classes, partial(nn.GroupNorm, 32))
        super().__init__(backbone, head, anchor_generator, num_classes=num_classes, **options)  # type: ignore[arg-type]
        self.matcher = Matcher(0.5, 0.4, allow_low_quality_matches=True)

    def level_scores(self, outputs: dict[str, list[Tensor]], image: int, level: int) -> Tensor:
        return torch.sigmoid(outputs["cls_logits"][level][image])

    def match(self, anchors: list[Tensor], boxes: Tensor) -> Tensor:
        """Return the matched ground-truth index of every anchor of one image: -1 negative, -2 ignored."""
        all_anchors = torch.cat(anchors)
        if boxes.shape[0] == 0:
            return torch.full((all_anchors.shape[0],), -1, dtype=torch.int64, device=all_anchors.device)
        return self.matcher(box_iou(enclosing_boxes(boxes), all_anchors))

    def compute_loss(
        self, outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]], targets: list[tuple[Tensor, Tensor]]
    ) -> dict[str, Tensor]:
        logits = _cat_levels(outputs["cls_logits"])
        regression = _cat_levels(outputs["bbox_regression"])
        class_targets = torch.zeros_like(logits)
        valid = torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
        positive_regression, positive_anchors, positive_boxes = [], [], []
        for image, ((boxes, labels), image_anchors) in enumerate(zip(targets, anchors)):
            matched = self.match(image_anchors, boxes)
            positive = (matched >= 0).nonzero().flatten()
            valid[image] = matched != Matcher.BETWEEN_THRESHOLDS
            class_targets[image, positive, labels[matched[positive]] - 1] = 1.0
            positive_regression.append(regression[image, positive])
            positive_anchors.append(torch.cat(image_anchors)[positive])
            positive_boxes.append(boxes[matched[positive]])
        num_positive = max(1, sum(p.shape[0] for p in positive_boxes))
        loss_classes = sigmoid_focal_loss(logits[valid], class_targets[valid], reduction="sum") / num_positive
        regression_p, boxes_p = torch.cat(positive_regression), torch.cat(positive_boxes)
        predicted = decode_boxes(regression_p, torch.cat(positive_anchors), "delta")
        loss_boxes = kld_box_loss(predicted, boxes_p).sum() / num_positive
        loss_angle = angle_loss(regression_p[:, 4], boxes_p).sum() / num_positive
        return {"classification": loss_classes, "bbox_regression": loss_boxes, "bbox_angle": loss_angle}
