"""On torchvision's default backbones the zoo's detectors compute exactly what torchvision's builders compute.

Both models start from random initialisation. The torchvision model's state
dict is then loaded strictly into the zoo model, so names and shapes must
agree as well as outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from heads_core import build_model, validate_manifest
from torchvision.models import detection

from .conftest import manifest_data, sample_images, sample_targets, task_of

NUM_CLASSES = 3
DETECTIONS = 10
PROPOSALS = 64
RCNN_LIMITS = {
    "rpn_pre_nms_top_n_train": PROPOSALS,
    "rpn_pre_nms_top_n_test": PROPOSALS,
    "rpn_post_nms_top_n_train": PROPOSALS,
    "rpn_post_nms_top_n_test": PROPOSALS,
    "box_detections_per_img": DETECTIONS,
}
SIZES = {"min_size": 96, "max_size": 128}

# torchvision builder and keyword arguments, and the zoo manifest fields that mean the same.
CASES: dict[str, tuple[Callable[..., Any], dict[str, Any], dict[str, Any]]] = {
    "faster_rcnn": (detection.fasterrcnn_resnet50_fpn, {**SIZES, **RCNN_LIMITS}, {**SIZES}),
    "mask_rcnn": (detection.maskrcnn_resnet50_fpn, {**SIZES, **RCNN_LIMITS}, {**SIZES}),
    "retinanet": (
        detection.retinanet_resnet50_fpn,
        {**SIZES, "score_thresh": 0.01, "detections_per_img": DETECTIONS},
        {**SIZES, "score_threshold": 0.01},
    ),
    "fcos": (
        detection.fcos_resnet50_fpn,
        {**SIZES, "score_thresh": 0.01, "detections_per_img": DETECTIONS},
        {**SIZES, "score_threshold": 0.01},
    ),
    "ssd": (detection.ssd300_vgg16, {"detections_per_img": DETECTIONS}, {}),
    "ssdlite": (detection.ssdlite320_mobilenet_v3_large, {"detections_per_img": DETECTIONS}, {}),
}
DEFAULT_BACKBONES = {
    "faster_rcnn": "resnet50",
    "mask_rcnn": "resnet50",
    "retinanet": "resnet50",
    "fcos": "resnet50",
    "ssd": "vgg16",
    "ssdlite": "mobilenet_v3_large",
}


def _silence_background(state: dict[str, torch.Tensor]) -> None:
    """Make the sigmoid classifiers' background output never fire, as in trained weights.

    The zoo's RetinaNet and FCOS drop label 0 before post-processing. With
    random weights torchvision's would report it, and the comparison would
    differ for that reason alone. A separate test covers the dropping.
    """
    bias = state["head.classification_head.cls_logits.bias"]
    bias.view(-1, NUM_CLASSES + 1)[:, 0] = -20.0


# SSD300 runs VGG-16 on 300x300 inputs (about 30 GFLOPs per image), too slow for the fast suite.
PARAMETERS = [pytest.param(a, marks=pytest.mark.heavy) if a == "ssd" else a for a in CASES]


@pytest.mark.parametrize("architecture", PARAMETERS)
def test_outputs_equal_torchvision_builder(architecture: str) -> None:
    builder, builder_kwargs, fields = CASES[architecture]
    torch.manual_seed(0)
    reference = builder(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1, **builder_kwargs)
    data = manifest_data(architecture, "torchvision", DEFAULT_BACKBONES[architecture], **fields)
    assert data["detections_per_image"] == DETECTIONS
    assert data.get("proposals_per_image", PROPOSALS) == PROPOSALS
    ours = build_model(validate_manifest(data)).model

    state = reference.state_dict()
    if architecture in ("retinanet", "fcos"):
        _silence_background(state)
        reference.load_state_dict(state)
    ours.load_state_dict(state, strict=True)

    images = sample_images()
    reference.eval()
    ours.eval()
    with torch.no_grad():
        expected = reference(images)
        actual = ours(images)
    for want, got in zip(expected, actual):
        assert set(got) == set(want)
        assert want["boxes"].shape[0] > 0
        for key in want:
            assert torch.equal(got[key], want[key]), key

    reference.train()
    ours.train()
    targets = sample_targets(images, with_masks=task_of(architecture) == "instance_segmentation")
    torch.manual_seed(1)
    expected_losses = reference(images, targets)
    torch.manual_seed(1)
    actual_losses = ours(images, targets)
    assert set(actual_losses) == set(expected_losses)
    for key in expected_losses:
        assert torch.equal(actual_losses[key], expected_losses[key]), key
