"""Manifest validation: defaults filled per architecture, and errors that name the fix."""

from __future__ import annotations

import pytest
from heads_core import ManifestError, canonical_json, validate_manifest
from heads_detection import DetectionManifest, InstanceSegmentationManifest

from .conftest import manifest_data, small_manifest


def test_task_selects_manifest_class() -> None:
    assert isinstance(small_manifest("retinanet"), DetectionManifest)
    assert isinstance(small_manifest("mask_rcnn"), InstanceSegmentationManifest)


@pytest.mark.parametrize(
    ("architecture", "score", "nms", "per_image"),
    [
        ("faster_rcnn", 0.05, 0.5, 100),
        ("retinanet", 0.05, 0.5, 300),
        ("fcos", 0.2, 0.6, 100),
        ("ssd", 0.01, 0.45, 200),
        ("ssdlite", 0.001, 0.55, 300),
        ("mask_rcnn", 0.05, 0.5, 100),
    ],
)
def test_postprocessing_defaults_match_torchvision(architecture: str, score: float, nms: float, per_image: int) -> None:
    data = manifest_data(architecture)
    del data["detections_per_image"]
    manifest = validate_manifest(data)
    assert manifest.score_threshold == score
    assert manifest.nms_threshold == nms
    assert manifest.detections_per_image == per_image


def test_default_sizes_per_architecture() -> None:
    rcnn = validate_manifest({k: v for k, v in manifest_data("faster_rcnn").items() if k not in ("min_size", "max_size")})
    assert (rcnn.min_size, rcnn.max_size, rcnn.fixed_size) == (800, 1333, None)
    ssd = small_manifest("ssd", "torchvision", "vgg16")
    assert ssd.fixed_size == (300, 300)
    ssdlite = small_manifest("ssdlite", "torchvision", "mobilenet_v3_large")
    assert ssdlite.fixed_size == (320, 320)


def test_fixed_input_backbone_gets_its_size() -> None:
    manifest = small_manifest("faster_rcnn", "timm", "vit_small_patch16_224")
    assert manifest.fixed_size == (224, 224)
    assert manifest.min_size is None


def test_fixed_input_backbone_rejects_min_size() -> None:
    with pytest.raises(ManifestError, match=r"accepts only 224x224 inputs.*fixed_size: \[224, 224\]"):
        small_manifest("faster_rcnn", "timm", "vit_small_patch16_224", min_size=200)


def test_fixed_size_and_min_size_conflict() -> None:
    with pytest.raises(ManifestError, match="give fixed_size or min_size and max_size, not both"):
        small_manifest("fcos", fixed_size=[128, 128])


def test_min_size_above_max_size() -> None:
    with pytest.raises(ManifestError, match="min_size 200 is larger than max_size 128"):
        small_manifest("fcos", min_size=200)


def test_torchvision_default_statistics() -> None:
    ssd = small_manifest("ssd", "torchvision", "vgg16")
    assert ssd.preprocess.mean == (0.48235, 0.45882, 0.40784)
    assert ssd.preprocess.std == (1 / 255, 1 / 255, 1 / 255)
    ssdlite = small_manifest("ssdlite", "torchvision", "mobilenet_v3_large")
    assert ssdlite.preprocess.mean == (0.5, 0.5, 0.5)
    rcnn = small_manifest("faster_rcnn", "torchvision", "resnet50")
    assert rcnn.preprocess.mean == (0.485, 0.456, 0.406)


def test_statistics_sized_for_in_chans() -> None:
    manifest = small_manifest("faster_rcnn", backbone={"in_chans": 4})
    assert len(manifest.preprocess.mean) == 4
    assert len(manifest.preprocess.std) == 4


def test_preprocess_length_must_match_in_chans() -> None:
    with pytest.raises(ManifestError, match="preprocess.mean and preprocess.std have 3 values but backbone.in_chans is 1"):
        small_manifest("fcos", backbone={"in_chans": 1}, preprocess={"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]})


def test_preprocess_rejects_crop_fields() -> None:
    with pytest.raises(ManifestError, match="preprocess.input_size: unknown key"):
        small_manifest("fcos", preprocess={"mean": [0.5] * 3, "std": [0.2] * 3, "input_size": [224, 224]})


def test_mask_rcnn_is_not_a_detection_architecture() -> None:
    with pytest.raises(ManifestError, match="architecture"):
        validate_manifest({**manifest_data("faster_rcnn"), "architecture": "mask_rcnn"})


def test_class_names_count_must_match() -> None:
    with pytest.raises(ManifestError, match="class_names has 2 entries but num_classes is 3"):
        small_manifest("retinanet", class_names=["cat", "dog"])


def test_class_names_must_be_unique() -> None:
    with pytest.raises(ManifestError, match="class_names repeats 'cat'"):
        small_manifest("retinanet", class_names=["cat", "dog", "cat"])


def test_levels_must_increase() -> None:
    with pytest.raises(ManifestError, match=r"levels \[3, 2\] must be strictly increasing"):
        small_manifest("retinanet", backbone={"levels": [3, 2]})


def test_coco_weights_need_default_backbone() -> None:
    with pytest.raises(ManifestError, match="exists only on the torchvision backbone 'resnet50'"):
        small_manifest("faster_rcnn", weights="COCO_V1")


def test_unknown_coco_member_lists_choices() -> None:
    with pytest.raises(ManifestError, match="choose one of: DEFAULT, COCO_V1"):
        small_manifest("faster_rcnn", "torchvision", "resnet50", weights="COCO_V9")


def test_coco_weights_of_another_enum() -> None:
    with pytest.raises(ManifestError, match="names the enum RetinaNet_ResNet50_FPN_Weights"):
        small_manifest("faster_rcnn", "torchvision", "resnet50", weights="RetinaNet_ResNet50_FPN_Weights.COCO_V1")


def test_default_weights_resolve_to_member() -> None:
    manifest = small_manifest("faster_rcnn", "torchvision", "resnet50", weights="DEFAULT")
    assert manifest.weights == "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
    assert manifest.backbone.frozen_batchnorm is True
    assert manifest.backbone.frozen_batchnorm_eps == 0.0


def test_fcos_coco_weights_keep_layer_eps() -> None:
    manifest = small_manifest("fcos", "torchvision", "resnet50", weights="COCO_V1")
    assert manifest.backbone.frozen_batchnorm is True
    assert manifest.backbone.frozen_batchnorm_eps is None


def test_coco_file_name_implies_zero_eps() -> None:
    manifest = small_manifest("retinanet", "torchvision", "resnet50", weights="weights/retinanet_resnet50_fpn_coco-eeacb38b.pth")
    assert manifest.backbone.frozen_batchnorm_eps == 0.0


def test_random_init_keeps_trainable_batchnorm() -> None:
    assert small_manifest("faster_rcnn").backbone.frozen_batchnorm is False


def test_ssdlite_never_freezes_batchnorm_by_default() -> None:
    manifest = small_manifest("ssdlite", "torchvision", "mobilenet_v3_large", weights="COCO_V1")
    assert manifest.backbone.frozen_batchnorm is False


def test_full_and_backbone_weights_conflict() -> None:
    with pytest.raises(ManifestError, match="remove backbone.weights"):
        small_manifest("fcos", weights="model.pth", backbone={"weights": "IMAGENET1K_V1"})


def test_proposals_only_for_rcnn() -> None:
    with pytest.raises(ManifestError, match="retinanet has no region proposal network"):
        small_manifest("retinanet", proposals_per_image=100)


def test_canonical_manifest_validates_to_itself() -> None:
    for architecture in ("faster_rcnn", "ssd", "mask_rcnn"):
        manifest = small_manifest(architecture)
        again = validate_manifest(manifest.model_dump(mode="json"))
        assert canonical_json(again) == canonical_json(manifest)


def test_partial_preprocess_filled_from_backbone():
    manifest = validate_manifest(manifest_data("fcos", preprocess={"mean": [0.5, 0.5, 0.5]}))
    assert manifest.preprocess.mean == (0.5, 0.5, 0.5)
    assert manifest.preprocess.std == pytest.approx((0.229, 0.224, 0.225))


def test_score_threshold_range_named():
    with pytest.raises(ManifestError) as raised:
        validate_manifest(manifest_data("fcos", score_threshold=2))
    assert "allowed: 0.0 <= score_threshold < 1.0" in str(raised.value)
