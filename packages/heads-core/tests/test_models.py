import hashlib

import pytest
import torch
from heads_core import build_model, load_model, save_model, validate_manifest

from .conftest import manifest_data


def _build(**overrides):
    manifest = validate_manifest(manifest_data(**overrides))
    return manifest, build_model(manifest).model


def _roundtrip(tmp_path, manifest, model, x):
    expected = model(x)
    save_model(model, manifest, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path / "model.safetensors")
    assert torch.equal(loaded.model(x), expected)
    return loaded


def test_timm_swin_pools_over_height_and_width(tmp_path):
    manifest, model = _build(
        backbone={"source": "timm", "name": "swin_tiny_patch4_window7_224"}, preprocess=None
    )
    x = torch.randn(1, 3, 224, 224)
    features = model.backbone(x)
    assert features.shape == (1, 768, 7, 7)
    raw = model.backbone.model.forward_features(x)
    assert raw.shape == (1, 7, 7, 768)
    assert torch.equal(features, raw.permute(0, 3, 1, 2))
    assert model.head.fc.in_features == 768
    torch.testing.assert_close(model(x), model.head.fc(raw.mean(dim=(1, 2))))
    _roundtrip(tmp_path, manifest, model, x)


def test_swin_derived_buffers_after_load(tmp_path):
    manifest, model = _build(backbone={"source": "timm", "name": "swin_tiny_patch4_window7_224"}, preprocess=None)
    save_model(model, manifest, tmp_path / "swin.safetensors")
    loaded = load_model(tmp_path / "swin.safetensors").model
    built = dict(model.named_buffers())
    for name, buffer in loaded.named_buffers():
        assert buffer.device.type == "cpu", name
        assert torch.equal(buffer, built[name]), name


@pytest.mark.parametrize("name", ["swinv2_cr_tiny_ns_224", "vitamin_small_224"])
def test_load_without_meta_construction(tmp_path, name, monkeypatch):
    """Models whose constructor computes with parameter values load through the CPU construction."""
    import heads_core._api as api

    calls = []
    original = api.deferred_initialisation

    def watched(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    manifest, model = _build(backbone={"source": "timm", "name": name}, preprocess=None)
    monkeypatch.setattr(api, "deferred_initialisation", watched)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _roundtrip(tmp_path, manifest, model, x)
    assert calls == [{"discard": True}]


def test_timm_vit_small_backbone(tmp_path):
    manifest, model = _build(backbone={"source": "timm", "name": "vit_small_patch16_224"}, preprocess=None)
    x = torch.randn(2, 3, 224, 224)
    timm_model = model.backbone.model
    with torch.no_grad():
        expected = timm_model.forward_head(timm_model.forward_features(x), pre_logits=True)
        features = model.backbone(x)
    assert features.shape == (2, 384, 1, 1)
    torch.testing.assert_close(features.flatten(1), expected)
    assert model(x).shape == (2, 3)
    _roundtrip(tmp_path, manifest, model, x)


def test_torchvision_vit_backbone():
    _, model = _build(backbone={"source": "torchvision", "name": "vit_b_16"}, preprocess=None)
    # The class token after the encoder's norm, as torchvision's classifier takes it.
    assert model.backbone(torch.randn(1, 3, 224, 224)).shape == (1, 768, 1, 1)


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_grayscale_resnet18(source):
    _, model = _build(
        backbone={"source": source, "name": "resnet18", "in_chans": 1},
        preprocess={"input_size": [64, 64], "mean": [0.5], "std": [0.25]},
    )
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 1, H, W\), got \(2, 3, 64, 64\)"):
        model(torch.randn(2, 3, 64, 64))


def test_four_channel_torchvision_backbone():
    _, model = _build(
        backbone={"source": "torchvision", "name": "efficientnet_b0", "in_chans": 4},
        preprocess={"input_size": [64, 64], "mean": [0.5] * 4, "std": [0.25] * 4},
    )
    assert model(torch.randn(2, 4, 64, 64)).shape == (2, 3)


def _without(data, *keys):
    return {k: v for k, v in data.items() if k not in keys}


@pytest.mark.parametrize("batch", [1, 4])
def test_regression_three_outputs(batch):
    data = _without(manifest_data(task="regression", num_outputs=3), "num_classes", "class_names")
    model = build_model(validate_manifest(data)).model
    assert model(torch.randn(batch, 3, 64, 64)).shape == (batch, 3)


def test_anomaly_single_image():
    data = _without(manifest_data(task="anomaly_detection"), "num_classes", "class_names")
    model = build_model(validate_manifest(data)).model
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1)


def test_same_manifest_same_sha256(tmp_path):
    manifest = validate_manifest(manifest_data())
    first = save_model(build_model(manifest).model, manifest, tmp_path / "a.safetensors")
    second = save_model(build_model(manifest).model, manifest, tmp_path / "b.safetensors")
    assert first == second
    assert hashlib.sha256((tmp_path / "a.safetensors").read_bytes()).hexdigest() == first


def test_different_seed_changes_weights(tmp_path):
    first = save_model(*_build()[::-1], tmp_path / "a.safetensors")
    second = save_model(*_build(seed=7)[::-1], tmp_path / "b.safetensors")
    assert first != second


def test_channels_last_roundtrip(tmp_path):
    manifest, model = _build()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last)
    loaded = _roundtrip(tmp_path, manifest, model, x)
    contiguous = build_model(manifest).model
    assert torch.equal(loaded.model.backbone.model.conv1.weight, contiguous.backbone.model.conv1.weight)


def test_loaded_model_is_eval_and_trainable(tmp_path):
    manifest, model = _build()
    save_model(model, manifest, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors").model
    assert not loaded.training
    loaded.train()
    loss = loaded(torch.randn(2, 3, 64, 64)).sum()
    loss.backward()
    assert loaded.head.fc.weight.grad is not None
    with torch.no_grad():
        loaded.head.fc.weight.add_(1.0)
    again = load_model(tmp_path / "m.safetensors").model
    assert torch.equal(again.head.fc.weight, model.head.fc.weight)


def test_build_model_takes_mapping():
    data = manifest_data(backbone={"source": "timm", "name": "test_resnet"})
    from_mapping = build_model(data).model.state_dict()
    from_manifest = build_model(validate_manifest(data)).model.state_dict()
    assert from_mapping.keys() == from_manifest.keys()
    assert all(torch.equal(from_mapping[key], from_manifest[key]) for key in from_mapping)


def test_prepare_image_follows_manifest(tmp_path):
    from heads_core import prepare_image
    from PIL import Image

    manifest = validate_manifest(manifest_data(backbone={"source": "timm", "name": "test_resnet"}))
    image = Image.new("RGB", (100, 80), (255, 128, 0))
    path = tmp_path / "orange.png"
    image.save(path)
    tensor = prepare_image(path, manifest)
    assert tensor.shape == (3, 64, 64)
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - 0.5) / 0.25
    torch.testing.assert_close(tensor[:, 32, 32], expected)
    assert torch.equal(prepare_image(image, manifest), tensor)
