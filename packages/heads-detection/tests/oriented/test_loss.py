"""The KLD box loss and the angle loss: symmetries, minima and finite gradients."""

from __future__ import annotations

import math

import pytest
import torch
from heads_detection.oriented.loss import angle_loss, boxes_to_gaussians, kld_box_loss

from .conftest import random_boxes


def test_square_turned_ninety_degrees_is_at_minimum():
    target = torch.tensor([[30.0, 40.0, 20.0, 20.0, 0.3]], dtype=torch.float64)
    predicted = torch.tensor([[30.0, 40.0, 20.0, 20.0, 0.3 + math.pi / 2]], dtype=torch.float64, requires_grad=True)
    loss = kld_box_loss(predicted, target) + angle_loss(predicted[:, 4], target)
    loss.sum().backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-12)
    assert predicted.grad is not None
    assert bool(torch.isfinite(predicted.grad).all())
    assert float(predicted.grad.abs().max()) < 1e-9
    for change in ([1.0, 0, 0, 0, 0], [0, 0, 1.0, 0, 0], [0, 0, 0, -1.0, 0]):
        moved = predicted.detach() + torch.tensor([change], dtype=torch.float64)
        assert float(kld_box_loss(moved, target)) > float(loss.detach())


def test_three_descriptions_of_one_box_cost_the_same():
    target = random_boxes(300, seed=21, min_side=3)
    predicted = random_boxes(300, seed=22, min_side=3)
    predicted[:, :2] = target[:, :2] + (predicted[:, :2] - 25) * 0.1
    cx, cy, w, h, a = predicted.unbind(-1)
    reference = kld_box_loss(predicted, target)
    for variant in (torch.stack((cx, cy, w, h, a + math.pi), -1), torch.stack((cx, cy, h, w, a + math.pi / 2), -1)):
        assert torch.allclose(kld_box_loss(variant, target), reference, atol=1e-9)
    assert torch.allclose(angle_loss(a + math.pi, target), angle_loss(a, target), atol=1e-12)


def test_loss_is_zero_only_for_the_same_box():
    boxes = random_boxes(200, seed=23, min_side=2)
    assert float(kld_box_loss(boxes, boxes).abs().max()) < 1e-9
    moved = boxes.clone()
    moved[:, 0] += 0.5
    assert bool((kld_box_loss(moved, boxes) > 0).all())


def test_loss_grows_with_angle_error():
    target = torch.tensor([[50.0, 50.0, 60.0, 20.0, 0.4]], dtype=torch.float64)
    errors = torch.linspace(0, math.pi / 2, 30, dtype=torch.float64)
    predicted = target.repeat(30, 1)
    predicted[:, 4] += errors
    box = kld_box_loss(predicted, target.expand(30, 5))
    angle = angle_loss(predicted[:, 4], target.expand(30, 5))
    assert bool((box[1:] > box[:-1]).all())
    assert bool((angle[1:] > angle[:-1]).all())
    assert float(angle[-1]) == pytest.approx(1 - 20 / 60)


def test_gradients_finite_for_squares_and_degenerate_boxes():
    generator = torch.Generator().manual_seed(24)
    squares = random_boxes(100, seed=25, min_side=5)
    squares[:, 3] = squares[:, 2]
    targets = random_boxes(100, seed=26, min_side=5)
    flat = random_boxes(20, seed=27)
    flat[:, 3] = 0.0
    predicted = torch.cat((squares, flat, squares[:20])).requires_grad_(True)
    target = torch.cat((targets, targets[:20], flat))
    target[:, 4] += torch.rand(140, generator=generator, dtype=torch.float64)
    loss = kld_box_loss(predicted, target) + angle_loss(predicted[:, 4], target)
    loss.sum().backward()
    assert bool(torch.isfinite(loss).all())
    assert predicted.grad is not None
    assert bool(torch.isfinite(predicted.grad).all())


def test_square_angle_gets_no_gradient_from_kld():
    square = torch.tensor([[10.0, 10.0, 8.0, 8.0, 0.7]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[11.0, 9.0, 12.0, 5.0, -0.3]], dtype=torch.float64)
    kld_box_loss(square, target).sum().backward()
    assert square.grad is not None
    assert abs(float(square.grad[0, 4])) < 1e-9


def test_loss_range_and_far_boxes():
    near = kld_box_loss(torch.tensor([[0.0, 0.0, 10.0, 5.0, 0.0]]), torch.tensor([[0.5, 0.0, 10.0, 5.0, 0.0]]))
    far = kld_box_loss(torch.tensor([[0.0, 0.0, 10.0, 5.0, 0.0]]), torch.tensor([[500.0, 0.0, 10.0, 5.0, 1.0]]))
    assert 0.0 < float(near) < float(far) < 1.0


def test_gaussian_of_axis_aligned_box():
    mean, covariance = boxes_to_gaussians(torch.tensor([[3.0, 4.0, 10.0, 4.0, 0.0]]))
    assert mean.tolist() == [[3.0, 4.0]]
    assert torch.allclose(covariance, torch.tensor([[[25.0, 0.0], [0.0, 4.0]]]))


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        kld_box_loss(torch.zeros(3, 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="tau"):
        kld_box_loss(torch.ones(1, 5), torch.ones(1, 5), tau=0.5)
    with pytest.raises(ValueError, match="raw_angle"):
        angle_loss(torch.zeros(3), torch.zeros(2, 5))
