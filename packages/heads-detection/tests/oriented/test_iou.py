"""Rotated IoU and rotated NMS, checked against shapely's polygon intersection."""

from __future__ import annotations

import math

import pytest
import torch
from heads_detection.oriented.geometry import boxes_to_polygons
from heads_detection.oriented.iou import (
    batched_rotated_nms,
    elementwise_rotated_iou,
    pairwise_rotated_iou,
    rotated_nms,
)
from shapely.geometry import Polygon

from .conftest import random_boxes

TOLERANCE = 1e-4


def shapely_iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Return the IoU of aligned box rows, computed by shapely on the boxes' corner polygons."""
    results = []
    for a, b in zip(boxes_to_polygons(first.double()).tolist(), boxes_to_polygons(second.double()).tolist()):
        pa, pb = Polygon(a), Polygon(b)
        inter = pa.intersection(pb).area
        union = pa.area + pb.area - inter
        results.append(inter / union if union > 0 else 0.0)
    return torch.tensor(results, dtype=torch.float64)


def shift_along_width(boxes: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    moved = boxes.clone()
    moved[:, 0] += distance * torch.cos(boxes[:, 4])
    moved[:, 1] += distance * torch.sin(boxes[:, 4])
    return moved


def pair_cases() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return named sets of box pairs: random, identical, disjoint, nested, touching and near-parallel."""
    generator = torch.Generator().manual_seed(11)
    cases = {"random": (random_boxes(1200, seed=12), random_boxes(1200, seed=13))}

    base = random_boxes(200, seed=14, min_side=2)
    cases["identical"] = (base, base.clone())

    far = base.clone()
    far[:, 0] += 200.0
    cases["disjoint"] = (base, far)

    # Half-size boxes at the same angle, then smaller boxes turned by up to 0.05 rad.
    # With sides 2 to 40, both stay strictly inside the outer box.
    half = base.clone()
    half[:, 2:4] *= 0.5
    turned = base.clone()
    turned[:, 2:4] *= 0.3 + 0.2 * torch.rand(200, 1, generator=generator, dtype=torch.float64)
    turned[:, 4] += (torch.rand(200, generator=generator, dtype=torch.float64) - 0.5) * 0.1
    cases["nested"] = (torch.cat((base, base)), torch.cat((half, turned)))

    # Same size and angle, moved by exactly one width: the boxes share an edge.
    cases["touching"] = (base, shift_along_width(base, base[:, 2]))
    # A corner-to-corner touch: moved along the diagonal by its length.
    diagonal = base.clone()
    cos, sin = torch.cos(base[:, 4]), torch.sin(base[:, 4])
    diagonal[:, 0] += base[:, 2] * cos - base[:, 3] * sin
    diagonal[:, 1] += base[:, 2] * sin + base[:, 3] * cos
    cases["touching corners"] = (base, diagonal)

    tilted = base.clone()
    tiny = 10 ** (-6 + 4 * torch.rand(200, generator=generator, dtype=torch.float64))
    tilted[:, 4] += tiny * torch.where(torch.rand(200, generator=generator) < 0.5, -1.0, 1.0).double()
    tilted[:, 0] += (torch.rand(200, generator=generator, dtype=torch.float64) - 0.5) * base[:, 2]
    cases["near-parallel"] = (base, tilted)

    overlapping_edges = shift_along_width(base, base[:, 2] * 0.5)
    overlapping_edges[:, 4] += 1e-7
    cases["collinear edges"] = (base, overlapping_edges)
    return cases


CASES = pair_cases()


@pytest.mark.parametrize("name", list(CASES))
def test_iou_matches_shapely(name):
    first, second = CASES[name]
    ours = elementwise_rotated_iou(first, second)
    reference = shapely_iou(first, second)
    assert ours.dtype == torch.float64
    assert float((ours - reference).abs().max()) < TOLERANCE


def test_iou_case_values():
    assert bool((elementwise_rotated_iou(*CASES["identical"]) > 1 - 1e-9).all())
    assert bool((elementwise_rotated_iou(*CASES["disjoint"]) == 0).all())
    assert bool((elementwise_rotated_iou(*CASES["touching"]) < 1e-9).all())
    outer, inner = CASES["nested"]
    area_ratio = (inner[:, 2] * inner[:, 3]) / (outer[:, 2] * outer[:, 3])
    assert torch.allclose(elementwise_rotated_iou(outer, inner), area_ratio, atol=1e-9)


def test_random_pairs_cover_overlap_range():
    reference = shapely_iou(*CASES["random"])
    assert int((reference == 0).sum()) > 100
    assert int(((reference > 0.05) & (reference < 0.95)).sum()) > 200


def test_iou_float32_inputs():
    first, second = CASES["random"]
    ours = elementwise_rotated_iou(first.float(), second.float())
    assert ours.dtype == torch.float32
    assert float((ours.double() - shapely_iou(first.float(), second.float())).abs().max()) < TOLERANCE


def test_pairwise_matches_elementwise():
    first, second = random_boxes(40, seed=15, spread=30), random_boxes(30, seed=16, spread=30)
    matrix = pairwise_rotated_iou(first, second)
    assert matrix.shape == (40, 30)
    rows = first[:, None, :].expand(40, 30, 5).reshape(-1, 5)
    columns = second[None, :, :].expand(40, 30, 5).reshape(-1, 5)
    assert torch.allclose(matrix.reshape(-1), shapely_iou(rows, columns), atol=TOLERANCE)


def test_square_turned_ninety_degrees_is_same_box():
    square = torch.tensor([[30.0, 40.0, 20.0, 20.0, 0.3]])
    turned = torch.tensor([[30.0, 40.0, 20.0, 20.0, 0.3 + math.pi / 2]])
    assert float(elementwise_rotated_iou(square, turned)) == pytest.approx(1.0, abs=1e-6)


def test_zero_area_boxes_have_zero_iou():
    flat = torch.tensor([[10.0, 10.0, 5.0, 0.0, 0.2], [10.0, 10.0, 0.0, 0.0, 0.0]])
    other = torch.tensor([[10.0, 10.0, 5.0, 3.0, 0.2], [10.0, 10.0, 0.0, 0.0, 0.0]])
    assert elementwise_rotated_iou(flat, other).tolist() == [0.0, 0.0]


def test_iou_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        pairwise_rotated_iou(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        elementwise_rotated_iou(torch.zeros(3, 5), torch.zeros(2, 5))


# --- non-maximum suppression ------------------------------------------------------


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Greedy NMS on shapely IoUs."""
    order = scores.argsort(descending=True, stable=True).tolist()
    polygons = [Polygon(p) for p in boxes_to_polygons(boxes.double()).tolist()]
    kept: list[int] = []
    for index in order:
        overlaps = []
        for other in kept:
            inter = polygons[index].intersection(polygons[other]).area
            overlaps.append(inter / (polygons[index].area + polygons[other].area - inter))
        if all(o <= threshold for o in overlaps):
            kept.append(index)
    return kept


@pytest.mark.parametrize("seed", range(3))
def test_nms_matches_reference(seed):
    boxes = random_boxes(100, seed=100 + seed, min_side=5, max_side=30, spread=60)
    scores = torch.rand(100, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for threshold in (0.1, 0.5, 0.8):
        assert rotated_nms(boxes, scores, threshold).tolist() == reference_nms(boxes, scores, threshold)


def test_nms_stops_at_max_kept():
    boxes = random_boxes(100, seed=120, min_side=5, max_side=30, spread=200)
    scores = torch.rand(100, generator=torch.Generator().manual_seed(3))
    full = rotated_nms(boxes, scores, 0.5)
    assert rotated_nms(boxes, scores, 0.5, max_kept=7).tolist() == full[:7].tolist()


def test_batched_nms_keeps_classes_apart():
    boxes = random_boxes(120, seed=130, min_side=5, max_side=30, spread=60)
    scores = torch.rand(120, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    labels = torch.randint(1, 4, (120,), generator=torch.Generator().manual_seed(5))
    kept = batched_rotated_nms(boxes, scores, labels, 0.4).tolist()
    expected = []
    for label in (1, 2, 3):
        members = (labels == label).nonzero().flatten()
        expected += members[reference_nms(boxes[members], scores[members], 0.4)].tolist()
    assert sorted(kept) == sorted(expected)
    kept_scores = scores[kept]
    assert bool((kept_scores[:-1] >= kept_scores[1:]).all())


def test_boxes_across_angle_ends_suppress_each_other():
    boxes = torch.tensor([[50.0, 50.0, 40.0, 12.0, math.pi / 2 - 0.01], [50.0, 50.0, 40.0, 12.0, -math.pi / 2 + 0.01]])
    assert float(elementwise_rotated_iou(boxes[:1], boxes[1:])) > 0.9
    kept = batched_rotated_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), 0.5)
    assert kept.tolist() == [0]


def test_nms_of_no_boxes():
    assert rotated_nms(torch.zeros(0, 5), torch.zeros(0), 0.5).tolist() == []
    assert batched_rotated_nms(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5).tolist() == []


def test_nms_paths_agree(monkeypatch):
    """Many clustered boxes go through the one-at-a-time path; it keeps what the all-pairs path keeps."""
    import heads_detection.oriented.iou as iou_module

    boxes = random_boxes(400, seed=140, min_side=5, max_side=30, spread=40)
    scores = torch.rand(400, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    all_pairs = rotated_nms(boxes, scores, 0.3).tolist()
    monkeypatch.setattr(iou_module, "_NMS_PAIR_BUDGET", 0)
    assert rotated_nms(boxes, scores, 0.3).tolist() == all_pairs
    assert rotated_nms(boxes, scores, 0.3, max_kept=5).tolist() == all_pairs[:5]
