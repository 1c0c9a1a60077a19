"""Save and load through heads-core: the loaded model gives the built model's outputs exactly."""

import hashlib
import json

import pytest
import torch
from heads_core import (
    build_model,
    inspect_checkpoint,
    load_model,
    save_model,
    validate_manifest,
)

from .conftest import backbone, seeded_input, seg_data, small


def _roundtrip(tmp_path, manifest, result, x):
    model = result.model.eval()
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "model.safetensors"
    save_model(model, manifest, path, result.reinitialized)
    loaded = load_model(path)
    assert not loaded.model.training
    with torch.no_grad():
        actual = loaded.model(x)
    assert list(actual) == list(expected)
    for key in expected:
        assert torch.equal(actual[key], expected[key]), key
    return path, loaded


@pytest.mark.parametrize("architecture", ["fcn", "deeplabv3", "deeplabv3plus", "lraspp"])
def test_loaded_model_matches_built(tmp_path, architecture):
    manifest, result = small(architecture, aux_classifier=architecture != "lraspp")
    _roundtrip(tmp_path, manifest, result, seeded_input(2, 3, 61, 83))


def test_loaded_torchvision_default_matches_built(tmp_path):
    manifest, result = small("deeplabv3plus", backbone=backbone("torchvision", "resnet50", output_stride=16))
    _roundtrip(tmp_path, manifest, result, seeded_input(1, 3, 64, 72))


def test_loaded_generic_torchvision_backbone_matches_built(tmp_path):
    manifest, result = small("fcn", backbone=backbone("torchvision", "mobilenet_v2"), aux_classifier=True)
    _roundtrip(tmp_path, manifest, result, seeded_input(1, 3, 64, 72))


def test_loaded_swin_matches_built(tmp_path):
    manifest, result = small("lraspp", backbone=backbone("timm", "swin_tiny_patch4_window7_224"))
    _, loaded = _roundtrip(tmp_path, manifest, result, seeded_input(1, 3, 97, 131))
    assert loaded.model.size_divisor == 4


def test_loaded_in_chans_four_matches_built(tmp_path):
    preprocess = {"input_size": [64, 64], "mean": [0.5] * 4, "std": [0.25] * 4}
    manifest, result = small(
        "deeplabv3plus", backbone=backbone("timm", "resnet18", in_chans=4), preprocess=preprocess
    )
    _roundtrip(tmp_path, manifest, result, seeded_input(1, 4, 64, 64))


def test_checkpoint_metadata_describes_masks(tmp_path):
    manifest, result = small("deeplabv3", aux_classifier=True)
    path = tmp_path / "model.safetensors"
    save_model(result.model, manifest, path, result.reinitialized)
    header, embedded = inspect_checkpoint(path)
    outputs = json.loads(header.metadata["zoo.outputs"])
    assert outputs["kind"] == "segmentation_logits"
    assert outputs["keys"] == {"out": ["N", 3, "H", "W"], "aux": ["N", 3, "H", "W"]}
    assert outputs["output_stride"] == 16
    assert outputs["class_names"] == ["background", "cat", "dog"]
    assert header.metadata["zoo.task"] == "segmentation"
    assert "heads-segmentation" in json.loads(header.metadata["zoo.versions"])
    assert embedded.backbone.output_stride == 16


def test_reinitialized_tensors_recorded(tmp_path, torch_home):
    import os

    import torchvision.models as tv_models

    reference = tv_models.get_model("lraspp_mobilenet_v3_large", weights=None, weights_backbone=None, num_classes=21)
    torch.save(reference.state_dict(), torch_home / os.path.basename(tv_models.get_model_weights("lraspp_mobilenet_v3_large").DEFAULT.url))
    manifest = validate_manifest(seg_data(backbone=backbone("torchvision", "mobilenet_v3_large"), weights="DEFAULT"))
    result = build_model(manifest)
    path = tmp_path / "adapted.safetensors"
    save_model(result.model, manifest, path, result.reinitialized)
    header, _ = inspect_checkpoint(path)
    assert json.loads(header.metadata["zoo.reinitialized"]) == [
        "classifier.high_classifier.bias",
        "classifier.high_classifier.weight",
        "classifier.low_classifier.bias",
        "classifier.low_classifier.weight",
    ]
    # The checkpoint loads without the torchvision file.
    os.remove(torch_home / os.path.basename(tv_models.get_model_weights("lraspp_mobilenet_v3_large").DEFAULT.url))
    assert load_model(path).manifest.weights == "DEFAULT"


def test_same_manifest_gives_identical_bytes(tmp_path):
    digests = []
    for index in range(2):
        manifest, result = small("lraspp")
        path = tmp_path / f"model-{index}.safetensors"
        save_model(result.model, manifest, path, result.reinitialized)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_load_reads_no_backbone_weights(tmp_path, write_manifest):
    import torchvision.models as tv_models
    from heads_core import build_model as build_from_path
    from heads_core import load_manifest

    torch.save(tv_models.mobilenet_v3_small(weights=None).state_dict(), tmp_path / "imagenet.pth")
    path = write_manifest(backbone=backbone("torchvision", "mobilenet_v3_small", weights="imagenet.pth"))
    manifest = load_manifest(path)
    result = build_from_path(path)
    checkpoint = tmp_path / "model.safetensors"
    save_model(result.model, manifest, checkpoint, result.reinitialized)
    (tmp_path / "imagenet.pth").unlink()
    loaded = load_model(checkpoint)
    x = seeded_input(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded.model(x)["out"], result.model(x)["out"])
