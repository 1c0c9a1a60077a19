"""Input checks, training targets, the label convention and what train and eval modes return."""

from __future__ import annotations

import pytest
import torch
from heads_core import build_model

from .conftest import (
    ALL_ARCHITECTURES,
    sample_images,
    sample_targets,
    small_manifest,
    task_of,
)


def _train_model(architecture: str, **fields: object) -> torch.nn.Module:
    model = build_model(small_manifest(architecture, **fields)).model
    model.train()
    return model


def test_four_channel_faster_rcnn_runs() -> None:
    model = build_model(small_manifest("faster_rcnn", backbone={"in_chans": 4})).model
    images = sample_images(in_chans=4)
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    assert model.transform.image_mean == list(small_manifest("faster_rcnn", backbone={"in_chans": 4}).preprocess.mean)
    assert len(model.transform.image_mean) == 4
    model.train()
    losses = model(images, sample_targets(images, with_masks=False))
    assert all(torch.isfinite(v) for v in losses.values())


def test_one_channel_image_into_three_channel_detector() -> None:
    model = build_model(small_manifest("faster_rcnn")).model
    grey = torch.rand(1, 64, 64)
    with pytest.raises(ValueError, match=r"image 0 has 1 channels \(shape \(1, 64, 64\)\), but the detector was built for 3"):
        model([grey])


def test_batch_tensor_is_split_into_images() -> None:
    model = build_model(small_manifest("fcos")).model
    batch = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        assert len(model(batch)) == 2


def test_integer_images_rejected() -> None:
    model = build_model(small_manifest("fcos")).model
    with pytest.raises(ValueError, match="dtype torch.uint8; detectors take float images with values in 0..1"):
        model([torch.zeros(3, 64, 64, dtype=torch.uint8)])


@pytest.mark.parametrize("architecture", ["faster_rcnn", "retinanet", "ssd"])
@pytest.mark.parametrize("label", [0, 4])
def test_label_outside_range_rejected(architecture: str, label: int) -> None:
    model = _train_model(architecture)
    images = sample_images()
    targets = sample_targets(images, with_masks=False)
    targets[1]["labels"] = torch.tensor([label])
    with pytest.raises(ValueError, match=rf"target 1 has label {label}, outside the allowed range 1\.\.3"):
        model(images, targets)


def test_training_without_targets_rejected() -> None:
    model = _train_model("retinanet")
    with pytest.raises(ValueError, match=r"training mode and needs targets.*call model.eval\(\)"):
        model(sample_images())


def test_degenerate_box_rejected() -> None:
    model = _train_model("fcos")
    images = sample_images()
    targets = sample_targets(images, with_masks=False)
    targets[0]["boxes"][0] = torch.tensor([50.0, 10.0, 40.0, 30.0])
    with pytest.raises(ValueError, match=r"target 0 has box \[50.0, 10.0, 40.0, 30.0\] with zero or negative width"):
        model(images, targets)


def test_mask_rcnn_needs_masks() -> None:
    model = _train_model("mask_rcnn")
    images = sample_images()
    with pytest.raises(ValueError, match=r"Mask R-CNN needs 'masks' of shape \(2, 96, 112\)"):
        model(images, sample_targets(images, with_masks=False))


def test_float_labels_rejected() -> None:
    model = _train_model("faster_rcnn")
    images = sample_images()
    targets = sample_targets(images, with_masks=False)
    targets[0]["labels"] = targets[0]["labels"].float()
    with pytest.raises(ValueError, match="labels must be integer class ids, got dtype torch.float32"):
        model(images, targets)


EXPECTED_LOSSES = {
    "faster_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
    "mask_rcnn": {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg", "loss_mask"},
    "retinanet": {"classification", "bbox_regression"},
    "fcos": {"classification", "bbox_regression", "bbox_ctrness"},
    "ssd": {"classification", "bbox_regression"},
    "ssdlite": {"classification", "bbox_regression"},
}


@pytest.mark.parametrize("architecture", ALL_ARCHITECTURES)
def test_train_mode_returns_losses_with_empty_image(architecture: str) -> None:
    model = _train_model(architecture)
    images = sample_images()
    targets = sample_targets(images, with_masks=task_of(architecture) == "instance_segmentation", empty_second=True)
    targets[0]["labels"] = targets[0]["labels"].to(torch.int32)
    losses = model(images, targets)
    assert set(losses) == EXPECTED_LOSSES[architecture]
    for name, value in losses.items():
        assert torch.isfinite(value), name
    sum(losses.values()).backward()

    model.eval()
    with torch.no_grad():
        detections = model(images)
    expected_keys = {"boxes", "labels", "scores"} | ({"masks"} if architecture == "mask_rcnn" else set())
    for detection in detections:
        assert set(detection) == expected_keys
        assert detection["boxes"].shape == (detection["labels"].shape[0], 4)
        assert ((detection["labels"] >= 1) & (detection["labels"] <= 3)).all()


@pytest.mark.parametrize("architecture", ["retinanet", "fcos"])
def test_sigmoid_detectors_never_report_background(architecture: str) -> None:
    model = build_model(small_manifest(architecture, score_threshold=0.001)).model
    classes = model.head.classification_head.num_classes
    with torch.no_grad():
        # Make the background output the strongest score everywhere.
        model.head.classification_head.cls_logits.bias.view(-1, classes)[:, 0] = 10.0
        detections = model(sample_images())
    labels = torch.cat([d["labels"] for d in detections])
    assert labels.numel() > 0
    assert labels.min() >= 1
    assert labels.max() <= 3
