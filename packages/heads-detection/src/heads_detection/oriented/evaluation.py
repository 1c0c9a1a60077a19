"""Matching of rotated detections to ground truth, and the summary figures of a held-out set."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .iou import pairwise_rotated_iou

__all__ = ["MatchSummary", "match_detections"]


@dataclass
class MatchSummary:
    """Matched detections over a set of images.

    Attributes:
        ious: rotated IoU of every matched detection with its ground-truth box.
        angle_errors: angle difference of every match modulo pi, in radians, in [0, pi/2].
        num_detections: detections at or above the score threshold.
        num_ground_truth: ground-truth boxes.
    """

    ious: list[float] = field(default_factory=list)
    angle_errors: list[float] = field(default_factory=list)
    num_detections: int = 0
    num_ground_truth: int = 0

    @property
    def mean_iou(self) -> float:
        """Mean rotated IoU of the matched detections; 0.0 when nothing matched."""
        return sum(self.ious) / len(self.ious) if self.ious else 0.0

    @property
    def recall(self) -> float:
        return len(self.ious) / self.num_ground_truth if self.num_ground_truth else 0.0

    @property
    def precision(self) -> float:
        return len(self.ious) / self.num_detections if self.num_detections else 0.0

    @property
    def mean_angle_error_degrees(self) -> float:
        return math.degrees(sum(self.angle_errors) / len(self.angle_errors)) if self.angle_errors else 0.0

    def add(self, detection: dict[str, Tensor], target: dict[str, Tensor], score_threshold: float, iou_threshold: float) -> None:
        """Match one image's detections to its targets and add the results."""
        ious, angle_errors, count = match_detections(detection, target, score_threshold, iou_threshold)
        self.ious += ious
        self.angle_errors += angle_errors
        self.num_detections += count
        self.num_ground_truth += int(target["boxes"].shape[0])


def match_detections(
    detection: dict[str, Tensor], target: dict[str, Tensor], score_threshold: float, iou_threshold: float
) -> tuple[list[float], list[float], int]:
    """Match one image's detections to its ground truth greedily, by decreasing score.

    Each detection at or above `score_threshold` takes the unmatched
    ground-truth box of the same label with which it has the highest rotated
    IoU, if that IoU is at least `iou_threshold`.

    Returns:
        The IoUs of the matches, their angle errors modulo pi in radians, and
        the number of detections at or above the score threshold.
    """
    keep = detection["scores"] >= score_threshold
    boxes, scores, labels = detection["boxes"][keep], detection["scores"][keep], detection["labels"][keep]
    boxes = boxes[scores.argsort(descending=True)]
    labels = labels[scores.argsort(descending=True)]
    truth, truth_labels = target["boxes"], target["labels"]
    if boxes.shape[0] == 0 or truth.shape[0] == 0:
        return [], [], int(boxes.shape[0])
    overlaps = pairwise_rotated_iou(boxes.float(), truth.float())
    overlaps[labels[:, None] != truth_labels[None, :]] = -1.0
    taken = torch.zeros(truth.shape[0], dtype=torch.bool)
    ious, angle_errors = [], []
    for row in range(boxes.shape[0]):
        candidates = overlaps[row].masked_fill(taken, -1.0)
        best = int(candidates.argmax())
        if candidates[best] < iou_threshold:
            continue
        taken[best] = True
        ious.append(float(candidates[best]))
        difference = float(boxes[row, 4] - truth[best, 4]) % math.pi
        angle_errors.append(min(difference, math.pi - difference))
    return ious, angle_errors, int(boxes.shape[0])
