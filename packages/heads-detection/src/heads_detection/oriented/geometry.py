"""The rotated-box convention of oriented detection, and its conversions.

A rotated box is a row (cx, cy, w, h, angle):

- (cx, cy) is the centre in pixels, x to the right and y down, as in image arrays.
- w and h are the side lengths in pixels, with w >= h after `normalize_boxes`.
- angle, in radians and in [-pi/2, pi/2), turns the width axis from the +x axis.
  Because image y points down, a positive angle turns the box clockwise on screen:
  the width axis is (cos(angle), sin(angle)) and the height axis is
  (-sin(angle), cos(angle)).

(w, h, a), (w, h, a + pi) and (h, w, a + pi/2) describe the same rectangle;
`normalize_boxes` maps all three to the same canonical row. A square has no
preferred width axis, so its canonical angle depends on the input angle modulo pi/2.

The four corners of a box are ordered centre - w/2 * u - h/2 * v, then
+u -v, +u +v, -u +v, where u and v are the width and height axes. At angle 0 that
is top-left, top-right, bottom-right, bottom-left, the same order as
torchvision's XYXYXYXY format.

`encode_boxes` and `decode_boxes` are the only place where the network's raw
outputs turn into boxes and back. The losses and the post-processing both go
through them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "BOX_CODING_STYLES",
    "BOX_FORMAT",
    "box_frame_offsets",
    "boxes_from_torchvision",
    "boxes_to_polygons",
    "boxes_to_torchvision",
    "decode_boxes",
    "enclosing_boxes",
    "encode_boxes",
    "normalize_boxes",
    "polygons_to_boxes",
    "wrap_angle",
]

BOX_FORMAT = "cxcywha"

# Largest log-ratio between a decoded side and its anchor's side; exp(4.135) is
# about 62.5, the limit torchvision's box coders use (log(1000 / 16)).
MAX_LOG_SCALE = math.log(1000.0 / 16)

# Box coding styles, the relation of raw regression outputs to boxes:
# "ltrb": distances from an anchor's centre to the four sides of the box, measured
#     along the box's own axes, as log(distance / anchor side) (FCOS).
# "delta": centre offset over the anchor's side and log side ratios (RetinaNet).
BOX_CODING_STYLES = ("ltrb", "delta")
BoxCodingStyle = Literal["ltrb", "delta"]


def _check_boxes(boxes: Tensor, name: str = "boxes") -> None:
    if boxes.shape[-1:] != (5,):
        raise ValueError(
            f"{name} must have shape (..., 5) holding (cx, cy, w, h, angle), got shape {tuple(boxes.shape)}"
        )


def wrap_angle(angle: Tensor) -> Tensor:
    """Map angles in radians onto [-pi/2, pi/2) modulo pi.

    Angles already in the range come back unchanged, bit for bit.
    """
    wrapped = angle - math.pi * torch.floor((angle + math.pi / 2) / math.pi)
    # Rounding can put an angle just below pi/2 onto pi/2 itself; fold it over.
    wrapped = torch.where(wrapped >= math.pi / 2, wrapped - math.pi, wrapped)
    inside = (angle >= -math.pi / 2) & (angle < math.pi / 2)
    return torch.where(inside, angle, wrapped)


def normalize_boxes(boxes: Tensor) -> Tensor:
    """Return the canonical form of rotated boxes: w >= h and angle in [-pi/2, pi/2).

    Boxes with w < h swap their sides and turn by pi/2, which describes the
    same rectangle. Gradients flow through the result.
    """
    _check_boxes(boxes)
    cx, cy, w, h, angle = boxes.unbind(-1)
    swap = w < h
    long_side = torch.where(swap, h, w)
    short_side = torch.where(swap, w, h)
    angle = torch.where(swap, angle + math.pi / 2, angle)
    return torch.stack((cx, cy, long_side, short_side, wrap_angle(angle)), dim=-1)


def _axes(angle: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Return (ux, uy, vx, vy): the width axis u and height axis v of each angle."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return cos, sin, -sin, cos


def boxes_to_polygons(boxes: Tensor) -> Tensor:
    """Convert rotated boxes (..., 5) into their four corners (..., 4, 2) as (x, y)."""
    _check_boxes(boxes)
    cx, cy, w, h, angle = boxes.unbind(-1)
    ux, uy, vx, vy = _axes(angle)
    half_w, half_h = w / 2, h / 2
    corners = []
    for sign_u, sign_v in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        x = cx + sign_u * half_w * ux + sign_v * half_h * vx
        y = cy + sign_u * half_w * uy + sign_v * half_h * vy
        corners.append(torch.stack((x, y), dim=-1))
    return torch.stack(corners, dim=-2)


def polygons_to_boxes(polygons: Tensor) -> Tensor:
    """Convert four-corner polygons (..., 4, 2) into canonical rotated boxes (..., 5).

    The corners must go around the rectangle in order, clockwise or
    counter-clockwise, starting anywhere. Rectangles convert exactly. Other
    quadrilaterals get a fitted box. Its centre is the mean of the corners and
    its sides are the means of opposite edge lengths. Its angle is the
    direction of the sum of the two edges that run along the first side.
    """
    if polygons.shape[-2:] != (4, 2):
        raise ValueError(f"polygons must have shape (..., 4, 2) holding four (x, y) corners, got {tuple(polygons.shape)}")
    p0, p1, p2, p3 = polygons.unbind(-2)
    centre = polygons.mean(dim=-2)
    along = (p1 - p0) + (p2 - p3)
    w = ((p1 - p0).norm(dim=-1) + (p2 - p3).norm(dim=-1)) / 2
    h = ((p3 - p0).norm(dim=-1) + (p2 - p1).norm(dim=-1)) / 2
    angle = torch.atan2(along[..., 1], along[..., 0])
    return normalize_boxes(torch.stack((centre[..., 0], centre[..., 1], w, h, angle), dim=-1))


def boxes_to_torchvision(boxes: Tensor) -> Tensor:
    """Convert rotated boxes to torchvision's CXCYWHR format.

    torchvision measures r in degrees, counter-clockwise on screen, so r is
    minus the angle in degrees. The sides are not reordered.
    """
    _check_boxes(boxes)
    cx, cy, w, h, angle = boxes.unbind(-1)
    return torch.stack((cx, cy, w, h, torch.rad2deg(-angle)), dim=-1)


def boxes_from_torchvision(boxes: Tensor) -> Tensor:
    """Convert torchvision CXCYWHR boxes (degrees, counter-clockwise) into canonical rotated boxes."""
    _check_boxes(boxes, "CXCYWHR boxes")
    cx, cy, w, h, degrees = boxes.unbind(-1)
    return normalize_boxes(torch.stack((cx, cy, w, h, torch.deg2rad(-degrees)), dim=-1))


def enclosing_boxes(boxes: Tensor) -> Tensor:
    """Return the axis-aligned (x1, y1, x2, y2) box that encloses each rotated box."""
    _check_boxes(boxes)
    cx, cy, w, h, angle = boxes.unbind(-1)
    cos, sin = torch.cos(angle).abs(), torch.sin(angle).abs()
    half_x = (w * cos + h * sin) / 2
    half_y = (w * sin + h * cos) / 2
    return torch.stack((cx - half_x, cy - half_y, cx + half_x, cy + half_y), dim=-1)


def box_frame_offsets(points: Tensor, boxes: Tensor) -> Tensor:
    """Express points relative to each box's centre along the box's width and height axes.

    Args:
        points: (..., 2) as (x, y).
        boxes: (..., 5) rotated boxes, broadcast against `points`.

    Returns:
        (..., 2) as (u, v): the point is inside the box when |u| <= w/2 and |v| <= h/2.
    """
    _check_boxes(boxes)
    ux, uy, vx, vy = _axes(boxes[..., 4])
    dx = points[..., 0] - boxes[..., 0]
    dy = points[..., 1] - boxes[..., 1]
    return torch.stack((dx * ux + dy * uy, dx * vx + dy * vy), dim=-1)


def _anchor_centres_and_sizes(anchors: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if anchors.shape[-1:] != (4,):
        raise ValueError(f"anchors must have shape (..., 4) holding (x1, y1, x2, y2), got {tuple(anchors.shape)}")
    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    return anchors[..., 0] + widths / 2, anchors[..., 1] + heights / 2, widths, heights


def _check_style(style: str) -> None:
    if style not in BOX_CODING_STYLES:
        raise ValueError(f"unknown box coding style {style!r}; choose one of: {', '.join(BOX_CODING_STYLES)}")


def encode_boxes(boxes: Tensor, anchors: Tensor, style: BoxCodingStyle) -> Tensor:
    """Turn rotated boxes into the regression targets of their anchors.

    Args:
        boxes: (..., 5) rotated boxes in pixels, normalised first.
        anchors: (..., 4) axis-aligned anchors (x1, y1, x2, y2), broadcast against `boxes`.
        style: "ltrb" or "delta", see `BOX_CODING_STYLES`.

    Returns:
        (..., 5): four box values, then the raw angle. For "ltrb" the box
        values are log(distance / anchor side) to the left, top, right and
        bottom sides along the box's axes. They are finite only for anchor
        centres inside the box. For "delta" they are (dx / anchor width,
        dy / anchor height, log(w / anchor width), log(h / anchor height)).
        The raw angle is the canonical angle itself, so `decode_boxes`
        returns it unchanged for every angle in [-pi/2, pi/2).
    """
    _check_style(style)
    boxes = normalize_boxes(boxes)
    ax, ay, aw, ah = _anchor_centres_and_sizes(anchors)
    cx, cy, w, h, angle = boxes.unbind(-1)
    if style == "ltrb":
        u, v = box_frame_offsets(torch.stack((ax, ay), dim=-1), boxes).unbind(-1)
        distances = torch.stack((w / 2 + u, h / 2 + v, w / 2 - u, h / 2 - v), dim=-1)
        sides = torch.stack((aw, ah, aw, ah), dim=-1)
        values = torch.log(distances / sides)
    else:
        values = torch.stack(((cx - ax) / aw, (cy - ay) / ah, torch.log(w / aw), torch.log(h / ah)), dim=-1)
    return torch.cat((values, angle.unsqueeze(-1)), dim=-1)


def decode_boxes(regression: Tensor, anchors: Tensor, style: BoxCodingStyle) -> Tensor:
    """Turn raw regression outputs back into canonical rotated boxes; the inverse of `encode_boxes`.

    Args:
        regression: (..., 5): four box values and the raw angle, as `encode_boxes` returns them.
        anchors: (..., 4) axis-aligned anchors (x1, y1, x2, y2), broadcast against `regression`.
        style: "ltrb" or "delta".

    Returns:
        (..., 5) rotated boxes with w >= h and angle in [-pi/2, pi/2). Log
        values are clamped at log(1000 / 16) so that untrained outputs stay finite.
        Gradients flow to `regression`.
    """
    _check_style(style)
    if regression.shape[-1:] != (5,):
        raise ValueError(f"regression must have shape (..., 5), got {tuple(regression.shape)}")
    ax, ay, aw, ah = _anchor_centres_and_sizes(anchors)
    values, angle = regression[..., :4], regression[..., 4]
    # The raw angle places the centre before it is wrapped, so the decoded
    # rectangle changes continuously as the raw angle crosses +-pi/2.
    if style == "ltrb":
        sides = torch.stack((aw, ah, aw, ah), dim=-1)
        left, top, right, bottom = (torch.exp(values.clamp(max=MAX_LOG_SCALE)) * sides).unbind(-1)
        w, h = left + right, top + bottom
        # The anchor centre sits at (u, v) = ((left - right) / 2, (top - bottom) / 2) in the box frame.
        u, v = (left - right) / 2, (top - bottom) / 2
        ux, uy, vx, vy = _axes(angle)
        cx = ax - u * ux - v * vx
        cy = ay - u * uy - v * vy
    else:
        dx, dy, dw, dh = values.unbind(-1)
        cx, cy = ax + dx * aw, ay + dy * ah
        w = torch.exp(dw.clamp(max=MAX_LOG_SCALE)) * aw
        h = torch.exp(dh.clamp(max=MAX_LOG_SCALE)) * ah
    return normalize_boxes(torch.stack((cx, cy, w, h, angle), dim=-1))
