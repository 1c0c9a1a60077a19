"""Oriented FCOS and RetinaNet: outputs, losses, input checks and a few training steps."""

from __future__ import annotations

import math

import pytest
import torch
from heads_core import build_model, validate_manifest
from heads_detection.oriented.head import OrientedDetectionHead
from heads_detection.oriented.models import OrientedFCOS, OrientedRetinaNet
from heads_detection.oriented.synthetic import SyntheticRectangles
from heads_detection.oriented.transform import OrientedTransform, scale_boxes

from .conftest import oriented_manifest_data

ARCHITECTURES = ("fcos", "retinanet")


def build(architecture: str, **fields):
    torch.manual_seed(0)
    return build_model(validate_manifest(oriented_manifest_data(architecture, **fields))).model


@pytest.fixture(scope="module", params=ARCHITECTURES)
def detector(request):
    return build(request.param, score_threshold=0.0)


def batch(seed: int = 0, count: int = 2):
    generator = SyntheticRectangles(image_size=64, num_classes=2, min_long_side=16, max_long_side=36)
    samples = generator.dataset(count, seed=seed)
    return [s[0] for s in samples], [s[1] for s in samples]


def test_angle_head_shapes():
    head = OrientedDetectionHead(in_channels=16, num_anchors=9)
    maps = [torch.rand(2, 16, 12, 10), torch.rand(2, 16, 6, 5), torch.rand(2, 16, 3, 3)]
    outputs = head(maps)
    assert [tuple(o.shape) for o in outputs] == [(2, 9, 12, 10), (2, 9, 6, 5), (2, 9, 3, 3)]
    assert [name for name, _ in head.named_parameters()] == ["angle_pred.weight", "angle_pred.bias"]
    assert tuple(head.angle_pred.weight.shape) == (9, 16, 3, 3)


def test_models_carry_the_angle_head(detector):
    expected_anchors = 1 if isinstance(detector, OrientedFCOS) else 9
    assert isinstance(detector.head.angle_head, OrientedDetectionHead)
    assert detector.head.angle_head.angle_pred.out_channels == expected_anchors
    outputs, anchors, _ = detector.run_head([torch.rand(3, 64, 64)])
    for regression, level_anchors in zip(outputs["bbox_regression"], anchors[0]):
        assert regression.shape == (1, level_anchors.shape[0], 5)


def test_eval_outputs_are_canonical(detector):
    detector.eval()
    images, _ = batch()
    with torch.no_grad():
        outputs = detector(images)
    assert len(outputs) == 2
    for output in outputs:
        boxes, scores, labels = output["boxes"], output["scores"], output["labels"]
        assert boxes.shape[1] == 5
        assert 0 < boxes.shape[0] <= 20
        assert scores.shape == labels.shape == (boxes.shape[0],)
        assert bool((boxes[:, 2] >= boxes[:, 3]).all())
        assert bool(((boxes[:, 4] >= -math.pi / 2) & (boxes[:, 4] < math.pi / 2)).all())
        assert bool(((labels >= 1) & (labels <= 2)).all())
        assert bool((scores[:-1] >= scores[1:]).all())


def test_train_losses_finite_with_empty_targets(detector):
    detector.train()
    images, targets = batch()
    targets[1] = {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = detector(images, targets)
    expected = {"classification", "bbox_regression", "bbox_angle"}
    if isinstance(detector, OrientedFCOS):
        expected.add("bbox_ctrness")
    assert set(losses) == expected
    total = sum(losses.values())
    total.backward()
    assert bool(torch.isfinite(total))
    gradients = [p.grad for p in detector.parameters() if p.grad is not None]
    assert gradients
    assert all(bool(torch.isfinite(g).all()) for g in gradients)
    assert detector.head.angle_head.angle_pred.weight.grad is not None
    assert float(detector.head.angle_head.angle_pred.weight.grad.abs().sum()) > 0
    detector.zero_grad()


def test_train_without_objects(detector):
    detector.train()
    empty = {"boxes": torch.zeros(0, 5), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = detector([torch.rand(3, 64, 64)], [empty])
    assert float(losses["classification"].detach()) > 0
    assert float(losses["bbox_regression"].detach()) == 0.0


@pytest.mark.parametrize("label", [0, 3, -1])
def test_label_outside_range_is_rejected(detector, label):
    detector.train()
    images, targets = batch(count=1)
    targets[0]["labels"][0] = label
    with pytest.raises(ValueError, match=rf"label {label} is outside 1\.\.2"):
        detector(images, targets)


def test_bad_targets_name_the_problem(detector):
    detector.train()
    images, targets = batch(count=1)
    with pytest.raises(ValueError, match="needs targets"):
        detector(images)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        detector(images, [{"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.int64)}])
    flat = {"boxes": torch.tensor([[10.0, 10.0, 5.0, 0.0, 0.0]]), "labels": torch.ones(1, dtype=torch.int64)}
    with pytest.raises(ValueError, match="both sides must be positive"):
        detector(images, [flat])
    broken = {"boxes": torch.tensor([[10.0, math.nan, 5.0, 2.0, 0.0]]), "labels": torch.ones(1, dtype=torch.int64)}
    with pytest.raises(ValueError, match="NaN"):
        detector(images, [broken])
    with pytest.raises(ValueError, match="one target per image"):
        detector(images + images, targets)


def test_wrong_channel_count_is_rejected(detector):
    detector.eval()
    with pytest.raises(ValueError, match="1 channels"):
        detector([torch.rand(1, 64, 64)])


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_few_steps_lower_the_loss(architecture):
    model = build(architecture)
    model.train()
    images, targets = batch(seed=3, count=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        total = sum(model(images, targets).values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total.detach()))
    assert losses[-1] < losses[0]


def test_four_channel_model():
    model = build("fcos", backbone={"source": "torchvision", "name": "resnet18", "in_chans": 4})
    model.eval()
    with torch.no_grad():
        outputs = model([torch.rand(4, 64, 80)])
    assert outputs[0]["boxes"].shape[1] == 5


def test_retinanet_anchor_sizes_follow_scale():
    model = build("retinanet", anchor_scale=2.0)
    assert isinstance(model, OrientedRetinaNet)
    sizes = model.anchor_generator.sizes
    assert len(sizes) == 5
    assert sizes[0][0] == pytest.approx(16.0)
    assert sizes[1][0] == pytest.approx(32.0)


# --- resizing ---------------------------------------------------------------


def test_transform_keeps_aspect_ratio_and_pads():
    transform = OrientedTransform(64, 96, [0.5] * 3, [0.5] * 3)
    images = transform([torch.rand(3, 40, 80), torch.rand(3, 64, 64)])
    assert images.image_sizes == [(48, 96), (64, 64)]
    assert tuple(images.tensors.shape) == (2, 3, 64, 96)
    fixed = OrientedTransform(0, 0, [0.5] * 3, [0.5] * 3, fixed_size=(96, 96))
    images = fixed([torch.rand(3, 40, 80)])
    assert images.image_sizes == [(48, 96)]
    assert tuple(images.tensors.shape) == (1, 3, 96, 96)
    assert float(images.tensors[0, :, 48:].abs().max()) == 0.0


def test_scale_boxes_round_trip():
    boxes = torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.5], [30.0, 5.0, 6.0, 6.0, -1.0]])
    scaled = scale_boxes(boxes, (40, 80), (48, 96))
    assert torch.allclose(scaled, boxes * torch.tensor([1.2, 1.2, 1.2, 1.2, 1.0]))
    assert torch.allclose(scale_boxes(scaled, (48, 96), (40, 80)), boxes)


def test_detections_in_input_pixels():
    """Detections of an image and of the same image at twice the size (resized to the same input) scale by two."""
    model = build("fcos", score_threshold=0.0, min_size=64, max_size=64)
    model.eval()
    image = torch.rand(3, 64, 64)
    large = torch.nn.functional.interpolate(image[None], scale_factor=2, mode="nearest")[0]
    with torch.no_grad():
        small_out, large_out = model([image]), model([large])
    assert large_out[0]["boxes"].shape[0] > 0
    transform = model.transform
    assert transform([large]).image_sizes == [(64, 64)]
    halved = large_out[0]["boxes"] * torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0])
    assert torch.allclose(halved[:5, :4], small_out[0]["boxes"][:5, :4], atol=0.5)
