"""Parity with torchvision's segmentation models, and torchvision's weights from the torch hub cache."""

import os

import pytest
import torch
import torchvision.models as tv_models
from heads_core import (
    WeightsNotFoundError,
    adapt_input_conv,
    build_model,
    validate_manifest,
)

from .conftest import backbone, seeded_input, seg_data


def _torchvision_model(builder: str, num_classes: int, aux: bool):
    kwargs = {"aux_loss": aux} if not builder.startswith("lraspp") else {}
    return tv_models.get_model(builder, weights=None, weights_backbone=None, num_classes=num_classes, **kwargs).eval()


def _assert_same_outputs(ours, reference, x):
    with torch.no_grad():
        expected = reference(x)
        actual = ours(x)
    assert list(actual) == list(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key


PAIRS = [
    ("fcn", "resnet50", True),
    ("deeplabv3", "resnet50", True),
    ("lraspp", "mobilenet_v3_large", False),
    ("deeplabv3", "mobilenet_v3_large", True),
]


@pytest.mark.parametrize(("architecture", "name", "aux"), PAIRS)
def test_matches_torchvision(architecture, name, aux):
    manifest = validate_manifest(
        seg_data(architecture=architecture, backbone=backbone("torchvision", name), num_classes=21, class_names=None, aux_classifier=aux)
    )
    model = build_model(manifest).model
    reference = _torchvision_model(f"{architecture}_{name}", 21, aux)
    reference.load_state_dict(model.state_dict(), strict=True)
    _assert_same_outputs(model, reference, seeded_input(2, 3, 72, 88))


@pytest.mark.heavy
@pytest.mark.parametrize("architecture", ["fcn", "deeplabv3"])
def test_matches_torchvision_resnet101(architecture):
    manifest = validate_manifest(
        seg_data(architecture=architecture, backbone=backbone("torchvision", "resnet101"), num_classes=21, class_names=None, aux_classifier=True)
    )
    model = build_model(manifest).model
    reference = _torchvision_model(f"{architecture}_resnet101", 21, True)
    reference.load_state_dict(model.state_dict(), strict=True)
    _assert_same_outputs(model, reference, seeded_input(1, 3, 64, 64))


def _cache_torchvision_weights(folder, builder: str, aux: bool):
    """Write random weights of torchvision's `builder` where torch hub keeps its DEFAULT file."""
    reference = _torchvision_model(builder, 21, aux)
    url = tv_models.get_model_weights(builder).DEFAULT.url
    torch.save(reference.state_dict(), folder / os.path.basename(url))
    return reference


def test_torchvision_weights_from_cache(torch_home):
    reference = _cache_torchvision_weights(torch_home, "lraspp_mobilenet_v3_large", aux=False)
    manifest = validate_manifest(
        seg_data(backbone=backbone("torchvision", "mobilenet_v3_large"), num_classes=21, class_names=None, weights="DEFAULT")
    )
    result = build_model(manifest)
    assert result.reinitialized == []
    _assert_same_outputs(result.model, reference, seeded_input(1, 3, 96, 80))


def test_new_class_count_replaces_both_lraspp_convolutions(torch_home):
    reference = _cache_torchvision_weights(torch_home, "lraspp_mobilenet_v3_large", aux=False)
    manifest = validate_manifest(
        seg_data(backbone=backbone("torchvision", "mobilenet_v3_large"), weights="COCO_WITH_VOC_LABELS_V1")
    )
    result = build_model(manifest)
    assert result.reinitialized == [
        "classifier.high_classifier.bias",
        "classifier.high_classifier.weight",
        "classifier.low_classifier.bias",
        "classifier.low_classifier.weight",
    ]
    ours = result.model.state_dict()
    assert ours["classifier.low_classifier.weight"].shape == (3, 40, 1, 1)
    for name, tensor in reference.state_dict().items():
        if name not in result.reinitialized:
            assert torch.equal(ours[name], tensor), name


def test_new_class_count_replaces_main_and_aux(torch_home):
    reference = _cache_torchvision_weights(torch_home, "deeplabv3_mobilenet_v3_large", aux=True)
    manifest = validate_manifest(
        seg_data(
            architecture="deeplabv3",
            backbone=backbone("torchvision", "mobilenet_v3_large"),
            aux_classifier=True,
            weights="DEFAULT",
        )
    )
    result = build_model(manifest)
    assert result.reinitialized == [
        "aux_classifier.4.bias",
        "aux_classifier.4.weight",
        "classifier.4.bias",
        "classifier.4.weight",
    ]
    ours = result.model.state_dict()
    assert torch.equal(ours["aux_classifier.0.weight"], reference.state_dict()["aux_classifier.0.weight"])
    assert ours["aux_classifier.4.weight"].shape == (3, 10, 1, 1)


def test_absent_aux_classifier_skipped(torch_home):
    reference = _cache_torchvision_weights(torch_home, "deeplabv3_mobilenet_v3_large", aux=True)
    manifest = validate_manifest(
        seg_data(architecture="deeplabv3", backbone=backbone("torchvision", "mobilenet_v3_large"), weights="DEFAULT")
    )
    result = build_model(manifest)
    assert result.reinitialized == ["classifier.4.bias", "classifier.4.weight"]
    assert result.model.aux_classifier is None
    assert not any(key.startswith("aux_classifier.") for key in result.model.state_dict())
    assert torch.equal(result.model.state_dict()["classifier.0.project.0.weight"], reference.state_dict()["classifier.0.project.0.weight"])


def test_torchvision_weights_adapted_to_in_chans(torch_home):
    reference = _cache_torchvision_weights(torch_home, "lraspp_mobilenet_v3_large", aux=False)
    manifest = validate_manifest(
        seg_data(
            backbone=backbone("torchvision", "mobilenet_v3_large", in_chans=4),
            num_classes=21,
            class_names=None,
            weights="DEFAULT",
            preprocess={"input_size": [64, 64], "mean": [0.5] * 4, "std": [0.25] * 4},
        )
    )
    model = build_model(manifest).model
    stem = model.state_dict()["backbone.0.0.weight"]
    assert stem.shape == (16, 4, 3, 3)
    assert torch.equal(stem, adapt_input_conv(reference.state_dict()["backbone.0.0.weight"], 4))
    with torch.no_grad():
        assert model(torch.randn(1, 4, 64, 64))["out"].shape == (1, 21, 64, 64)


def test_missing_torchvision_weights_name_cache_path(torch_home):
    manifest = validate_manifest(seg_data(backbone=backbone("torchvision", "mobilenet_v3_large"), weights="DEFAULT"))
    with pytest.raises(WeightsNotFoundError) as caught:
        build_model(manifest)
    text = str(caught.value)
    assert "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1" in text
    assert str(torch_home / "lraspp_mobilenet_v3_large-d234d4ea.pth") in text
    assert "TORCH_HOME" in text


def test_torchvision_backbone_weights_from_cache(torch_home):
    classifier = tv_models.mobilenet_v3_small(weights=None).eval()
    url = tv_models.MobileNet_V3_Small_Weights.DEFAULT.url
    torch.save(classifier.state_dict(), torch_home / os.path.basename(url))
    manifest = validate_manifest(seg_data(backbone=backbone("torchvision", "mobilenet_v3_small", weights="DEFAULT")))
    result = build_model(manifest)
    state = result.model.state_dict()
    assert torch.equal(state["backbone.1.block.0.0.weight"], classifier.state_dict()["features.1.block.0.0.weight"])
    assert "classifier.low_classifier.weight" in result.reinitialized
    assert "classifier.cbr.0.weight" in result.reinitialized
    assert not any(name.startswith("backbone.") for name in result.reinitialized)


def test_weights_file_relative_to_manifest(tmp_path, write_manifest):
    from heads_core import build_model as build_from_path

    source_model = build_model(validate_manifest(seg_data())).model
    torch.save({"state_dict": source_model.state_dict()}, tmp_path / "trained.pth")
    path = write_manifest(weights="trained.pth", seed=7)
    result = build_from_path(path)
    assert result.reinitialized == []
    for name, tensor in source_model.state_dict().items():
        assert torch.equal(result.model.state_dict()[name], tensor), name


def test_weights_file_of_other_architecture_rejected(tmp_path):
    other = build_model(validate_manifest(seg_data(architecture="fcn"))).model
    torch.save(other.state_dict(), tmp_path / "fcn.pth")
    manifest = validate_manifest(seg_data(weights=str(tmp_path / "fcn.pth")))
    with pytest.raises(ValueError, match="do not match the manifest's lraspp model: missing keys"):
        build_model(manifest)

