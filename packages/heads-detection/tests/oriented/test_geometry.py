"""The rotated-box convention: normalisation, polygons, torchvision's CXCYWHR, encode and decode."""

from __future__ import annotations

import math

import pytest
import torch
from heads_detection.oriented.geometry import (
    box_frame_offsets,
    boxes_from_torchvision,
    boxes_to_polygons,
    boxes_to_torchvision,
    decode_boxes,
    encode_boxes,
    normalize_boxes,
    polygons_to_boxes,
    wrap_angle,
)
from heads_detection.oriented.loss import kld_box_loss
from torchvision.ops import box_convert

from .conftest import random_boxes

STYLES = ("ltrb", "delta")


def same_corners(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Return, per polygon pair (..., 4, 2), the largest distance from a corner of one to the nearest corner of the other."""
    distances = (first[..., :, None, :] - second[..., None, :, :]).norm(dim=-1)
    return torch.maximum(distances.amin(dim=-1).amax(dim=-1), distances.amin(dim=-2).amax(dim=-1))


def edge_angle_degrees(polygon: torch.Tensor) -> float:
    """Return the direction of a polygon's first edge in degrees, measured from +x towards +y (down)."""
    dx, dy = (polygon[1] - polygon[0]).tolist()
    return math.degrees(math.atan2(dy, dx))


def anchors_around(boxes: torch.Tensor, seed: int) -> torch.Tensor:
    """Return axis-aligned anchors whose centres lie inside `boxes` (so "ltrb" targets are finite)."""
    generator = torch.Generator().manual_seed(seed)
    fraction = (torch.rand(boxes.shape[0], 2, generator=generator, dtype=boxes.dtype) - 0.5) * 0.9
    cos, sin = torch.cos(boxes[:, 4]), torch.sin(boxes[:, 4])
    u, v = fraction[:, 0] * boxes[:, 2], fraction[:, 1] * boxes[:, 3]
    cx = boxes[:, 0] + u * cos - v * sin
    cy = boxes[:, 1] + u * sin + v * cos
    side = 4.0 + torch.rand(boxes.shape[0], generator=generator, dtype=boxes.dtype) * 28
    return torch.stack((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2), dim=1)


# --- normalisation ----------------------------------------------------------


def test_wrap_angle_keeps_angles_in_range():
    angles = torch.linspace(-math.pi / 2, math.pi / 2, 1001, dtype=torch.float64)[:-1]
    assert torch.equal(wrap_angle(angles), angles)
    assert torch.equal(wrap_angle(angles.float()), angles.float())


def test_wrap_angle_maps_onto_half_open_range():
    angles = torch.linspace(-20.0, 20.0, 4001, dtype=torch.float64)
    wrapped = wrap_angle(angles)
    assert bool((wrapped >= -math.pi / 2).all())
    assert bool((wrapped < math.pi / 2).all())
    multiples = (angles - wrapped) / math.pi
    assert torch.allclose(multiples, multiples.round(), atol=1e-9)
    assert float(wrap_angle(torch.tensor(math.pi / 2, dtype=torch.float64))) == pytest.approx(-math.pi / 2)


def test_normalize_same_rectangle_three_ways():
    boxes = random_boxes(500, seed=1, min_side=2)
    cx, cy, w, h, a = boxes.unbind(-1)
    variants = [
        torch.stack((cx, cy, w, h, a), -1),
        torch.stack((cx, cy, w, h, a + math.pi), -1),
        torch.stack((cx, cy, h, w, a + math.pi / 2), -1),
        torch.stack((cx, cy, h, w, a - math.pi / 2), -1),
    ]
    reference = boxes_to_polygons(variants[0])
    canonical = normalize_boxes(variants[0])
    for variant in variants[1:]:
        normalized = normalize_boxes(variant)
        assert same_corners(boxes_to_polygons(normalized), reference).max() < 1e-9
        assert torch.allclose(normalized[:, :4], canonical[:, :4], atol=1e-9)
        non_square = (w - h).abs() > 1e-6
        difference = (normalized[:, 4] - canonical[:, 4]).abs()
        assert bool((torch.minimum(difference, math.pi - difference)[non_square] < 1e-9).all())


def test_normalize_output_is_canonical():
    boxes = random_boxes(1000, seed=2)
    boxes[:, 4] = (boxes[:, 4] - 0.5) * 10
    normalized = normalize_boxes(boxes)
    assert bool((normalized[:, 2] >= normalized[:, 3]).all())
    assert bool((normalized[:, 4] >= -math.pi / 2).all())
    assert bool((normalized[:, 4] < math.pi / 2).all())


def test_positive_angle_turns_clockwise_on_screen():
    box = torch.tensor([[50.0, 50.0, 40.0, 10.0, math.radians(30)]], dtype=torch.float64)
    polygon = boxes_to_polygons(box)[0]
    # With y pointing down, the width axis at +30 degrees points right and down.
    assert edge_angle_degrees(polygon) == pytest.approx(30.0)
    right_end = (polygon[1] + polygon[2]) / 2
    assert float(right_end[0]) > 50.0
    assert float(right_end[1]) > 50.0


def test_polygon_corner_order_at_zero_angle():
    box = torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.0]])
    polygon = boxes_to_polygons(box)[0].tolist()
    assert polygon == [[6.0, 18.0], [14.0, 18.0], [14.0, 22.0], [6.0, 22.0]]


# --- conversions ----------------------------------------------------------


def test_polygons_round_trip():
    boxes = normalize_boxes(random_boxes(1000, seed=3, min_side=1))
    back = polygons_to_boxes(boxes_to_polygons(boxes))
    assert torch.allclose(back[:, :4], boxes[:, :4], atol=1e-9)
    difference = (back[:, 4] - boxes[:, 4]).abs()
    assert float(torch.minimum(difference, math.pi - difference).max()) < 1e-9


def test_polygons_to_boxes_any_start_and_direction():
    boxes = normalize_boxes(random_boxes(200, seed=4, min_side=2))
    polygons = boxes_to_polygons(boxes)
    for shift in range(4):
        for reverse in (False, True):
            turned = polygons.roll(shift, dims=1)
            if reverse:
                turned = turned.flip(1)
            back = polygons_to_boxes(turned)
            assert same_corners(boxes_to_polygons(back), polygons).max() < 1e-9


def test_torchvision_round_trip():
    boxes = normalize_boxes(random_boxes(1000, seed=5))
    back = boxes_from_torchvision(boxes_to_torchvision(boxes))
    assert torch.allclose(back[:, :4], boxes[:, :4], atol=1e-9)
    difference = (back[:, 4] - boxes[:, 4]).abs()
    assert float(torch.minimum(difference, math.pi - difference).max()) < 1e-9


def test_torchvision_corners_match_ours():
    boxes = normalize_boxes(random_boxes(300, seed=6))
    theirs = box_convert(boxes_to_torchvision(boxes), "cxcywhr", "xyxyxyxy").reshape(-1, 4, 2)
    ours = boxes_to_polygons(boxes)
    assert torch.allclose(theirs, ours, atol=1e-9)


def test_torchvision_degrees_turn_counter_clockwise():
    converted = boxes_to_torchvision(torch.tensor([[0.0, 0.0, 4.0, 2.0, math.radians(10)]]))
    assert float(converted[0, 4]) == pytest.approx(-10.0)


def test_shape_errors_name_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        boxes_to_polygons(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4, 2\)"):
        polygons_to_boxes(torch.zeros(3, 3, 2))
    with pytest.raises(ValueError, match="ltrb, delta"):
        encode_boxes(torch.zeros(1, 5), torch.zeros(1, 4), "xyxy")  # type: ignore[arg-type]


# --- encode and decode ------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
def test_encode_decode_round_trip(style):
    boxes = normalize_boxes(random_boxes(1000, seed=7, min_side=3))
    anchors = anchors_around(boxes, seed=8)
    encoded = encode_boxes(boxes, anchors, style)
    assert bool(torch.isfinite(encoded).all())
    decoded = decode_boxes(encoded, anchors, style)
    assert torch.allclose(decoded, boxes, atol=1e-9)


@pytest.mark.parametrize("style", STYLES)
def test_angle_round_trip_whole_range(style):
    half_pi = torch.tensor(math.pi / 2)
    # The largest float32 below pi/2 is the last angle of the range.
    last = torch.nextafter(half_pi, torch.tensor(0.0))
    ends = torch.stack((-half_pi, last, -half_pi + 1e-6, half_pi - 1e-6))
    angles = torch.cat((torch.linspace(-math.pi / 2, math.pi / 2, 20001)[:-1], ends))
    assert bool((angles < half_pi).all())
    count = angles.shape[0]
    boxes = torch.stack(
        (torch.full((count,), 40.0), torch.full((count,), 30.0), torch.full((count,), 24.0), torch.full((count,), 9.0), angles),
        dim=1,
    )
    anchors = torch.tensor([[32.0, 22.0, 48.0, 38.0]]).expand(count, 4)
    raw = encode_boxes(boxes, anchors, style)
    back = decode_boxes(raw, anchors, style)[:, 4]
    assert float((back - angles).abs().max()) <= 1e-4


@pytest.mark.parametrize("style", STYLES)
def test_decode_is_continuous_across_the_angle_ends(style):
    anchors = torch.tensor([[30.0, 30.0, 46.0, 46.0]], dtype=torch.float64)
    for values in ([0.3, -0.2, 0.9, 0.1], [-0.4, 0.5, 0.2, -0.3]):
        below = decode_boxes(torch.tensor([[*values, math.pi / 2 - 1e-7]], dtype=torch.float64), anchors, style)
        above = decode_boxes(torch.tensor([[*values, math.pi / 2 + 1e-7]], dtype=torch.float64), anchors, style)
        assert float(same_corners(boxes_to_polygons(below), boxes_to_polygons(above)).max()) < 1e-5


def test_ltrb_encoding_measures_along_box_axes():
    box = torch.tensor([[50.0, 50.0, 40.0, 20.0, math.radians(90 - 1e-9)]], dtype=torch.float64)
    anchor = torch.tensor([[45.0, 45.0, 55.0, 65.0]], dtype=torch.float64)  # centre (50, 55), 10 x 20
    log_distances = encode_boxes(box, anchor, "ltrb")[0, :4]
    distances = torch.exp(log_distances) * torch.tensor([10.0, 20.0, 10.0, 20.0], dtype=torch.float64)
    # The width axis points down, so the anchor centre 5 px below the box centre is 25 px from the "left" side.
    assert distances.tolist() == pytest.approx([25.0, 10.0, 15.0, 10.0], abs=1e-6)


def test_box_frame_offsets_inside_test():
    box = torch.tensor([10.0, 10.0, 8.0, 2.0, math.radians(45)], dtype=torch.float64)
    along = torch.tensor([10.0 + 2.0, 10.0 + 2.0], dtype=torch.float64)
    across = torch.tensor([10.0 - 2.0, 10.0 + 2.0], dtype=torch.float64)
    u, v = box_frame_offsets(along, box).tolist()
    assert (u, v) == pytest.approx((2 * math.sqrt(2), 0.0))
    u, v = box_frame_offsets(across, box).tolist()
    assert (u, v) == pytest.approx((0.0, 2 * math.sqrt(2)))


# --- the two-degree case -------------------------------------------------------


def test_plus_minus_two_degrees_stay_apart_without_swap():
    plus = torch.tensor([[64.0, 64.0, 100.0, 50.0, math.radians(2)]])
    minus = torch.tensor([[64.0, 64.0, 100.0, 50.0, math.radians(-2)]])
    anchor = torch.tensor([[56.0, 56.0, 72.0, 72.0]])
    for style in STYLES:
        decoded_plus = decode_boxes(encode_boxes(plus, anchor, style), anchor, style)
        decoded_minus = decode_boxes(encode_boxes(minus, anchor, style), anchor, style)
        for decoded in (decoded_plus, decoded_minus):
            assert float(decoded[0, 2]) == pytest.approx(100.0, abs=1e-3)
            assert float(decoded[0, 3]) == pytest.approx(50.0, abs=1e-3)
        first = edge_angle_degrees(boxes_to_polygons(decoded_plus)[0])
        second = edge_angle_degrees(boxes_to_polygons(decoded_minus)[0])
        assert first - second == pytest.approx(4.0, abs=1e-3)
        loss = float(kld_box_loss(decoded_plus, decoded_minus))
        assert 0.0 < loss < 0.01
