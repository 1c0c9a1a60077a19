"""Exact intersection over union of rotated boxes, and rotated non-maximum suppression.

The intersection of two rectangles is a convex polygon whose vertices are the
corners of each rectangle that lie inside the other, plus the crossings of
their edges. All candidates of many pairs are computed at once, ordered by
angle around their centroid, and measured with the shoelace formula. The
arithmetic runs in float64 whatever the input dtype, so the relative error is
about 1e-9. Results come back in the input dtype.

Pairs whose circumscribed circles do not meet have IoU 0 and are skipped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .geometry import boxes_to_polygons

__all__ = [
    "batched_rotated_nms",
    "elementwise_rotated_iou",
    "pairwise_rotated_iou",
    "rotated_nms",
]

# Pairs measured per batch of the polygon intersection, which keeps the
# temporary tensors of one batch near 100 MB.
PAIRS_PER_CHUNK = 32768


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _inside_rectangles(points: Tensor, rectangles: Tensor, tolerance: Tensor) -> Tensor:
    """Return which of `points` (K, P, 2) lie inside or on `rectangles` (K, 4, 2).

    A point is inside when its projections on the rectangle's two edge
    directions from the first corner fall within the edge lengths.
    """
    origin = rectangles[:, 0:1]
    edge_u = rectangles[:, 1:2] - origin
    edge_v = rectangles[:, 3:4] - origin
    offset = points - origin
    along_u = (offset * edge_u).sum(-1)
    along_v = (offset * edge_v).sum(-1)
    length_u = (edge_u * edge_u).sum(-1)
    length_v = (edge_v * edge_v).sum(-1)
    slack_u = tolerance[:, None] * length_u.sqrt()
    slack_v = tolerance[:, None] * length_v.sqrt()
    return (
        (along_u >= -slack_u)
        & (along_u <= length_u + slack_u)
        & (along_v >= -slack_v)
        & (along_v <= length_v + slack_v)
    )


def _edge_crossings(first: Tensor, second: Tensor) -> tuple[Tensor, Tensor]:
    """Return the crossing points (K, 16, 2) of every edge pair and which of them are real."""
    start_a = first[:, :, None, :]
    direction_a = (first.roll(-1, dims=1) - first)[:, :, None, :]
    start_b = second[:, None, :, :]
    direction_b = (second.roll(-1, dims=1) - second)[:, None, :, :]
    denominator = _cross(direction_a, direction_b)
    between = start_b - start_a
    scale = direction_a.norm(dim=-1) * direction_b.norm(dim=-1)
    # Parallel edges never cross at a single point; their overlap, if any, is
    # made of corners that `_inside_rectangles` finds.
    crossing = denominator.abs() > 1e-12 * scale
    safe = torch.where(crossing, denominator, torch.ones_like(denominator))
    t = _cross(between, direction_b) / safe
    s = _cross(between, direction_a) / safe
    crossing &= (t >= 0) & (t <= 1) & (s >= 0) & (s <= 1)
    points = start_a + t[..., None] * direction_a
    return points.reshape(first.shape[0], 16, 2), crossing.reshape(first.shape[0], 16)


def _intersection_areas(first: Tensor, second: Tensor) -> Tensor:
    """Return the intersection areas (K,) of rectangle pairs given as corners (K, 4, 2), in float64."""
    count = first.shape[0]
    if count == 0:
        return first.new_zeros(0)
    scale = torch.maximum(first.abs().amax(dim=(1, 2)), second.abs().amax(dim=(1, 2))).clamp(min=1.0)
    tolerance = 1e-9 * scale
    crossings, crossing_valid = _edge_crossings(first, second)
    candidates = torch.cat((first, second, crossings), dim=1)
    valid = torch.cat(
        (_inside_rectangles(first, second, tolerance), _inside_rectangles(second, first, tolerance), crossing_valid),
        dim=1,
    )
    weights = valid.to(candidates.dtype)
    number = weights.sum(dim=1)
    centroid = (candidates * weights[..., None]).sum(dim=1) / number.clamp(min=1)[:, None]
    relative = candidates - centroid[:, None, :]
    angles = torch.atan2(relative[..., 1], relative[..., 0])
    angles = torch.where(valid, angles, torch.full_like(angles, 10.0))
    order = angles.argsort(dim=1)
    ordered = relative.gather(1, order[..., None].expand(-1, -1, 2))
    ordered_valid = valid.gather(1, order)
    # Invalid candidates sort last; they repeat the first vertex, so the edges
    # they add to the shoelace sum have zero length and the polygon closes.
    first_vertex = ordered[:, 0:1, :].expand_as(ordered)
    ordered = torch.where(ordered_valid[..., None], ordered, first_vertex)
    area = _cross(ordered, ordered.roll(-1, dims=1)).sum(dim=1).abs() / 2
    return torch.where(number >= 3, area, torch.zeros_like(area))


def _iou_of_pairs(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Return the IoU (K,) of aligned float64 box rows, skipping pairs too far apart to overlap."""
    result = boxes1.new_zeros(boxes1.shape[0])
    areas1 = boxes1[:, 2] * boxes1[:, 3]
    areas2 = boxes2[:, 2] * boxes2[:, 3]
    radius1 = boxes1[:, 2:4].norm(dim=1) / 2
    radius2 = boxes2[:, 2:4].norm(dim=1) / 2
    distance = (boxes1[:, :2] - boxes2[:, :2]).norm(dim=1)
    near = (distance < radius1 + radius2) & (areas1 > 0) & (areas2 > 0)
    indices = near.nonzero().flatten()
    for chunk in indices.split(PAIRS_PER_CHUNK):
        first = boxes_to_polygons(boxes1[chunk])
        second = boxes_to_polygons(boxes2[chunk])
        inter = _intersection_areas(first, second)
        union = areas1[chunk] + areas2[chunk] - inter
        result[chunk] = (inter / union.clamp(min=torch.finfo(union.dtype).tiny)).clamp(0.0, 1.0)
    return result


def _check_pair_input(boxes: Tensor, name: str) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"{name} must have shape (N, 5) holding (cx, cy, w, h, angle), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {boxes.dtype}")


def elementwise_rotated_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Return the IoU (N,) of each box of `boxes1` (N, 5) with the box in the same row of `boxes2`.

    Boxes with zero area have IoU 0 with everything. No gradient flows back.
    """
    _check_pair_input(boxes1, "boxes1")
    _check_pair_input(boxes2, "boxes2")
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"boxes1 and boxes2 must have the same shape, got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    with torch.no_grad():
        result = _iou_of_pairs(boxes1.double(), boxes2.double())
    return result.to(boxes1.dtype)


def pairwise_rotated_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Return the IoU matrix (N, M) of rotated boxes (N, 5) and (M, 5).

    Boxes with zero area have IoU 0 with everything. No gradient flows back.
    """
    _check_pair_input(boxes1, "boxes1")
    _check_pair_input(boxes2, "boxes2")
    n, m = boxes1.shape[0], boxes2.shape[0]
    with torch.no_grad():
        first = boxes1.double()[:, None, :].expand(n, m, 5).reshape(-1, 5)
        second = boxes2.double()[None, :, :].expand(n, m, 5).reshape(-1, 5)
        result = _iou_of_pairs(first, second)
    return result.reshape(n, m).to(boxes1.dtype)


# Rows of the pairwise centre-distance matrix computed at once during NMS.
_NMS_ROWS_PER_CHUNK = 1024
# NMS measures every pair of boxes that can overlap up front when there are at
# most this many. With more pairs (thousands of clustered candidates), it
# measures one kept box against the rest at a time and stops at `max_kept`.
_NMS_PAIR_BUDGET = 200_000


def _near_pairs(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Return the pairs (i, j), i < j, of boxes whose circumscribed circles overlap."""
    centres = boxes[:, :2]
    radii = boxes[:, 2:4].norm(dim=1) / 2
    columns = torch.arange(boxes.shape[0], device=boxes.device)
    empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
    firsts, seconds = [empty], [empty]
    for start in range(0, boxes.shape[0], _NMS_ROWS_PER_CHUNK):
        rows = columns[start : start + _NMS_ROWS_PER_CHUNK]
        near = torch.cdist(centres[rows], centres) < radii[rows, None] + radii[None, :]
        near &= rows[:, None] < columns[None, :]
        row, column = near.nonzero().unbind(1)
        firsts.append(rows[row])
        seconds.append(column)
    return torch.cat(firsts), torch.cat(seconds)


def _nms_all_pairs(boxes: Tensor, first: Tensor, second: Tensor, iou_threshold: float, limit: int) -> list[int]:
    """Greedy NMS over boxes sorted by score, given every pair that can overlap."""
    overlapping = _iou_of_pairs(boxes[first], boxes[second]) > iou_threshold
    suppresses: list[list[int]] = [[] for _ in range(boxes.shape[0])]
    for a, b in zip(first[overlapping].tolist(), second[overlapping].tolist()):
        suppresses[a].append(b)
    removed = [False] * boxes.shape[0]
    kept: list[int] = []
    for index in range(boxes.shape[0]):
        if len(kept) == limit:
            break
        if removed[index]:
            continue
        kept.append(index)
        for other in suppresses[index]:
            removed[other] = True
    return kept


def _nms_one_at_a_time(boxes: Tensor, iou_threshold: float, limit: int) -> list[int]:
    """Greedy NMS over boxes sorted by score, measuring each kept box against the remaining ones."""
    remaining = torch.arange(boxes.shape[0], device=boxes.device)
    kept: list[int] = []
    while remaining.numel() > 0 and len(kept) < limit:
        top, rest = remaining[0], remaining[1:]
        kept.append(int(top))
        overlaps = _iou_of_pairs(boxes[top].expand(rest.shape[0], 5), boxes[rest])
        remaining = rest[overlaps <= iou_threshold]
    return kept


def rotated_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_kept: int | None = None) -> Tensor:
    """Greedy non-maximum suppression of rotated boxes.

    The highest-scoring remaining box is kept, and every remaining box whose
    rotated IoU with it is greater than `iou_threshold` is dropped; repeat.

    Args:
        boxes: (N, 5) rotated boxes.
        scores: (N,) scores.
        iou_threshold: boxes overlapping a kept box by more than this are dropped.
        max_kept: stop after keeping this many boxes; None keeps all.

    Returns:
        Indices (int64) of the kept boxes, by decreasing score; equal scores keep the input order.
    """
    _check_pair_input(boxes, "boxes")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must have shape ({boxes.shape[0]},), one per box, got {tuple(scores.shape)}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    count = boxes.shape[0]
    limit = count if max_kept is None else min(max_kept, count)
    order = scores.argsort(descending=True, stable=True)
    with torch.no_grad():
        ordered = boxes.detach().double()[order]
        first, second = _near_pairs(ordered)
        if first.numel() <= _NMS_PAIR_BUDGET:
            kept = _nms_all_pairs(ordered, first, second, iou_threshold, limit)
        else:
            kept = _nms_one_at_a_time(ordered, iou_threshold, limit)
    return order[torch.tensor(kept, dtype=torch.int64, device=boxes.device)]


def batched_rotated_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, max_kept: int | None = None
) -> Tensor:
    """Rotated non-maximum suppression within each label separately.

    Boxes of different labels never suppress each other: each label's boxes
    are shifted along x by a distance greater than every box's extent, which
    leaves the IoU of boxes of one label unchanged.

    Returns:
        Indices (int64) of the kept boxes, by decreasing score.
    """
    _check_pair_input(boxes, "boxes")
    if labels.shape != boxes.shape[:1]:
        raise ValueError(f"labels must have shape ({boxes.shape[0]},), one per box, got {tuple(labels.shape)}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    shifted = boxes.detach().double().clone()
    extent = shifted[:, :2].abs().max() + shifted[:, 2:4].norm(dim=1).max() + 1.0
    shifted[:, 0] += labels.to(shifted.dtype) * 2 * extent
    return rotated_nms(shifted, scores, iou_threshold, max_kept)
