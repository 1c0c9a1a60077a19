import json

import pytest
from heads_core import (
    ManifestError,
    canonical_json,
    get_plugin,
    load_manifest,
    manifest_json_schema,
    validate_manifest,
)
from heads_segmentation import SEGMENTATION, SegmentationManifest

from .conftest import backbone, seg_data


def _problems(**overrides) -> str:
    with pytest.raises(ManifestError) as caught:
        validate_manifest(seg_data(**overrides), "seg.yaml")
    return str(caught.value)


def test_plugin_registered_by_entry_point():
    assert get_plugin("segmentation") is SEGMENTATION
    assert isinstance(validate_manifest(seg_data()), SegmentationManifest)


def test_schema_lists_segmentation_fields():
    schema = manifest_json_schema()
    properties = schema["$defs"]["SegmentationManifest"]["properties"]
    for field in ("architecture", "num_classes", "class_names", "aux_classifier", "weights"):
        assert field in properties, field
    assert "output_stride" in schema["$defs"]["SegmentationBackboneSpec"]["properties"]


@pytest.mark.parametrize(
    ("architecture", "source", "name", "expected"),
    [
        ("fcn", "torchvision", "resnet50", 8),
        ("deeplabv3", "torchvision", "resnet50", 8),
        ("deeplabv3plus", "torchvision", "resnet50", 16),
        ("lraspp", "torchvision", "mobilenet_v3_large", 16),
        ("deeplabv3", "torchvision", "mobilenet_v3_large", 16),
        ("fcn", "torchvision", "resnet18", 32),
        ("fcn", "timm", "resnet18", 8),
        ("deeplabv3", "torchvision", "efficientnet_b0", 32),
    ],
)
def test_default_output_stride(architecture, source, name, expected):
    manifest = validate_manifest(seg_data(architecture=architecture, backbone=backbone(source, name)))
    assert manifest.backbone.output_stride == expected


def test_filled_stride_survives_canonical_json():
    manifest = validate_manifest(seg_data(architecture="fcn", backbone=backbone("timm", "resnet18")))
    data = json.loads(canonical_json(manifest))
    assert data["backbone"]["output_stride"] == 8
    assert validate_manifest(data) == manifest


@pytest.mark.parametrize(
    ("source", "name", "stride", "choices"),
    [
        ("torchvision", "resnet18", 8, "it can give: 32"),
        ("torchvision", "mobilenet_v3_small", 8, "it can give: 16, 32"),
        ("torchvision", "efficientnet_b0", 16, "it can give: 32"),
        ("timm", "resnet18", 4, "it can give: 8, 16, 32"),
    ],
)
def test_unavailable_stride_names_choices(source, name, stride, choices):
    text = _problems(architecture="fcn", backbone=backbone(source, name, output_stride=stride))
    assert f"seg.yaml: backbone: output_stride {stride} is not available for {source} backbone {name}" in text
    assert choices in text
    assert "set backbone.output_stride to one of" in text


def test_swin_cannot_dilate():
    text = _problems(architecture="fcn", backbone=backbone("timm", "swin_tiny_patch4_window7_224", output_stride=16))
    assert "it can give: 32" in text


def test_explicit_stride_kept():
    manifest = validate_manifest(seg_data(architecture="fcn", backbone=backbone("torchvision", "resnet50", output_stride=16)))
    assert manifest.backbone.output_stride == 16


def test_lraspp_rejects_aux_classifier():
    text = _problems(aux_classifier=True)
    assert "lraspp has no auxiliary classifier" in text


def test_deeplabv3plus_needs_finer_level():
    text = _problems(architecture="deeplabv3plus", backbone=backbone("timm", "vit_tiny_patch16_224"))
    assert "deeplabv3plus fuses the output map with a finer feature map" in text
    assert "use architecture fcn or deeplabv3" in text


def test_fixed_size_backbone_rejected():
    text = _problems(architecture="fcn", backbone=backbone("torchvision", "vit_b_16"))
    assert "torchvision backbone vit_b_16 failed on a 97x131 input padded to a multiple of each of" in text
    assert "it needs a fixed input size" in text


def test_unknown_architecture_lists_choices():
    text = _problems(architecture="unet")
    assert "architecture" in text
    for choice in ("fcn", "deeplabv3", "deeplabv3plus", "lraspp"):
        assert choice in text


def test_class_names_must_match_count():
    text = _problems(class_names=["a", "b"])
    assert "class_names has 2 entries but num_classes is 3" in text


def test_num_classes_limited_by_mask_format():
    text = _problems(num_classes=65537, class_names=None)
    assert "num_classes" in text
    assert validate_manifest(seg_data(num_classes=65536, class_names=None)).num_classes == 65536


def test_whole_and_backbone_weights_conflict():
    text = _problems(
        architecture="lraspp",
        backbone=backbone("torchvision", "mobilenet_v3_large", weights="DEFAULT"),
        weights="DEFAULT",
    )
    assert "give only one of the two" in text


def test_weights_name_needs_torchvision_pair():
    text = _problems(weights="DEFAULT")
    assert "torchvision has no segmentation weights for lraspp on torchvision mobilenet_v3_small" in text
    assert "lraspp_mobilenet_v3_large" in text


def test_weights_name_must_exist():
    text = _problems(backbone=backbone("torchvision", "mobilenet_v3_large"), weights="IMAGENET1K_V1")
    assert "choose one of: DEFAULT, COCO_WITH_VOC_LABELS_V1" in text


def test_weights_name_needs_torchvision_stride():
    text = _problems(
        architecture="fcn", backbone=backbone("torchvision", "resnet50", output_stride=16), weights="DEFAULT"
    )
    assert "trained at output stride 8" in text


def test_weights_file_accepted_for_any_backbone():
    manifest = validate_manifest(seg_data(weights="trained/seg.safetensors"))
    assert manifest.weights == "trained/seg.safetensors"


def test_default_preprocess_keeps_whole_image():
    data = seg_data()
    del data["preprocess"]
    preprocess = validate_manifest(data).preprocess
    assert preprocess.input_size == (520, 520)
    assert preprocess.resize == 520
    assert preprocess.mean == (0.485, 0.456, 0.406)


def test_default_preprocess_sized_for_in_chans():
    data = seg_data(backbone=backbone("torchvision", "mobilenet_v3_small", in_chans=4))
    del data["preprocess"]
    assert len(validate_manifest(data).preprocess.mean) == 4


def test_manifest_file_roundtrip(write_manifest):
    manifest = load_manifest(write_manifest(description="yaml file"))
    assert manifest.description == "yaml file"
    assert manifest.backbone.output_stride == 16


def test_partial_preprocess_filled_from_backbone():
    manifest = validate_manifest(seg_data(preprocess={"input_size": [96, 96]}))
    assert manifest.preprocess.input_size == (96, 96)
    assert manifest.preprocess.mean == (0.485, 0.456, 0.406)
    assert manifest.preprocess.std == (0.229, 0.224, 0.225)
