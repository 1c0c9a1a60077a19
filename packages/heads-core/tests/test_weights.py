"""Pretrained weights from local caches and files; the tests write the weight files themselves."""

import pytest
import torch
from heads_core import WeightsNotFoundError, build_model, validate_manifest

from .conftest import manifest_data


def _resnet18_hub_file(torch_home):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.resnet18().eval()
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    target = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    return reference


def test_torchvision_weights_from_hub_cache_are_lossless(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = _resnet18_hub_file(tmp_path)
    manifest = validate_manifest(
        manifest_data(backbone={"source": "torchvision", "name": "resnet18", "weights": "IMAGENET1K_V1"},
                      num_classes=1000, class_names=None)
    )
    result = build_model(manifest)
    assert result.reinitialized == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(result.model(x), reference(x))


def test_torchvision_mobilenet_v3_hidden_layer_kept(tmp_path, monkeypatch):
    """MobileNetV3's classifier has a hidden layer; the zoo keeps it and takes over the last layer."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(6)
    reference = torchvision.models.mobilenet_v3_small().eval()
    url = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1.url
    target = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    manifest = validate_manifest(
        manifest_data(backbone={"source": "torchvision", "name": "mobilenet_v3_small", "weights": "IMAGENET1K_V1"},
                      num_classes=1000, class_names=None)
    )
    result = build_model(manifest)
    assert result.reinitialized == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_new_class_count_reinitializes_head(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = _resnet18_hub_file(tmp_path)
    manifest = validate_manifest(manifest_data(backbone={"source": "torchvision", "name": "resnet18", "weights": "DEFAULT"}))
    result = build_model(manifest)
    assert result.reinitialized == ["head.fc.bias", "head.fc.weight"]
    assert torch.equal(result.model.backbone.model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)


def test_grayscale_adapts_pretrained_conv(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = _resnet18_hub_file(tmp_path)
    manifest = validate_manifest(
        manifest_data(
            backbone={"source": "torchvision", "name": "resnet18", "weights": "DEFAULT", "in_chans": 1},
            preprocess={"input_size": [64, 64], "mean": [0.5], "std": [0.25]},
        )
    )
    conv = build_model(manifest).model.backbone.model.conv1
    assert conv.in_channels == 1
    torch.testing.assert_close(conv.weight, reference.conv1.weight.sum(dim=1, keepdim=True))


def test_missing_torchvision_weights_list_searched_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    manifest = validate_manifest(manifest_data(backbone={"source": "torchvision", "name": "resnet18", "weights": "DEFAULT"}))
    with pytest.raises(WeightsNotFoundError) as caught:
        build_model(manifest)
    assert str(tmp_path / "hub" / "checkpoints") in str(caught.value)
    assert "TORCH_HOME" in str(caught.value)


@pytest.mark.parametrize(("source", "choice"), [("torchvision", "IMAGENET1K_V1"), ("timm", "a1_in1k")])
def test_unknown_weights_tag_at_build(source, choice):
    # Validation rejects the tag already; a manifest validated without that check still fails clearly.
    data = manifest_data(backbone={"source": source, "name": "resnet18", "weights": "IMAGENET9K"})
    manifest = validate_manifest(data, check_backbone_names=False)
    with pytest.raises(ValueError, match=f"unknown {source} .*'IMAGENET9K' for resnet18; choose one of: .*{choice}"):
        build_model(manifest)


def _fake_hf_cache(cache, repo_id, state):
    from safetensors.torch import save_file

    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


def test_timm_weights_from_hugging_face_cache(tmp_path, monkeypatch):
    import timm

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(2)
    reference = timm.create_model("resnet18").eval()
    _fake_hf_cache(tmp_path, "timm/resnet18.a1_in1k", reference.state_dict())
    manifest = validate_manifest(
        manifest_data(backbone={"source": "timm", "name": "resnet18", "weights": "a1_in1k"}, num_classes=1000, class_names=None)
    )
    result = build_model(manifest)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=0, atol=1e-6)


def test_missing_timm_weights_list_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    manifest = validate_manifest(manifest_data(backbone={"source": "timm", "name": "resnet18", "weights": "DEFAULT"}))
    with pytest.raises(WeightsNotFoundError) as caught:
        build_model(manifest)
    assert f"{tmp_path}/models--timm--resnet18.a1_in1k" in str(caught.value)


def test_timm_weights_from_explicit_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    reference = timm.create_model("resnet18")
    save_file(reference.state_dict(), str(tmp_path / "resnet18.safetensors"))
    (tmp_path / "m.yaml").write_text(
        "name: explicit\nversion: '1'\ntask: classification\nnum_classes: 2\n"
        "backbone: {source: timm, name: resnet18, weights: resnet18.safetensors}\n"
    )
    result = build_model(tmp_path / "m.yaml")
    assert torch.equal(result.model.backbone.model.conv1.weight, reference.conv1.weight)
    assert result.reinitialized == ["head.fc.bias", "head.fc.weight"]


def test_torchvision_pickle_file_with_module_prefix(tmp_path):
    import torchvision

    torch.manual_seed(4)
    reference = torchvision.models.resnet18()
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "w.pth")
    manifest = validate_manifest(manifest_data(backbone={"source": "torchvision", "name": "resnet18", "weights": "w.pth"}))
    result = build_model(manifest, weights_dir=tmp_path)
    assert torch.equal(result.model.backbone.model.conv1.weight, reference.conv1.weight)


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_missing_weights_file_named(tmp_path, source):
    manifest = validate_manifest(manifest_data(backbone={"source": source, "name": "resnet18", "weights": "nope.safetensors"}))
    with pytest.raises(WeightsNotFoundError, match="nope.safetensors") as raised:
        build_model(manifest, weights_dir=tmp_path)
    assert str(tmp_path / "nope.safetensors") in str(raised.value)
    assert "give the path of an existing weights file" in str(raised.value)


def test_torchvision_safetensors_file_loads(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(5)
    reference = torchvision.models.resnet18()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    manifest = validate_manifest(
        manifest_data(backbone={"source": "torchvision", "name": "resnet18", "weights": "w.safetensors"})
    )
    result = build_model(manifest, weights_dir=tmp_path)
    assert torch.equal(result.model.backbone.model.conv1.weight, reference.conv1.weight)


def _write_bad_weights(folder, kind):
    """Write a weights file of one broken kind and return its name."""
    import timm
    from safetensors.torch import save_file

    if kind == "other-model":
        save_file(timm.create_model("test_resnet").state_dict(), str(folder / "other.safetensors"))
        return "other.safetensors"
    if kind == "whole-model":
        torch.save(timm.create_model("test_resnet"), folder / "whole.pth")
        return "whole.pth"
    if kind == "garbage-pickle":
        (folder / "garbage.pth").write_bytes(b"\x00not a pickle" * 64)
        return "garbage.pth"
    (folder / "garbage.safetensors").write_bytes(b"\xff" * 1024)
    return "garbage.safetensors"


BAD_WEIGHTS = {
    "other-model": "does not fit {source} resnet18; is it a file for another model? missing keys",
    "whole-model": "holds Python objects besides tensors (timm.models",
    "garbage-pickle": "is damaged or not a PyTorch weights file (UnpicklingError)",
    "garbage-safetensors": "not a readable safetensors file (Error while deserializing header",
}


@pytest.mark.parametrize("source", ["torchvision", "timm"])
@pytest.mark.parametrize("kind", sorted(BAD_WEIGHTS))
def test_bad_weights_file_explained(tmp_path, source, kind):
    from heads_core import CheckpointError

    name = _write_bad_weights(tmp_path, kind)
    manifest = validate_manifest(manifest_data(backbone={"source": source, "name": "resnet18", "weights": name}))
    with pytest.raises(CheckpointError) as raised:
        build_model(manifest, weights_dir=tmp_path)
    message = str(raised.value)
    assert message.startswith(str(tmp_path / name))
    assert BAD_WEIGHTS[kind].format(source=source) in message
    assert "\x1b[" not in message
    assert len(message) < 1000


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_fine_tuned_file_keeps_its_classifier(tmp_path, source):
    from safetensors.torch import save_file

    torch.manual_seed(7)
    if source == "timm":
        import timm

        reference = timm.create_model("resnet18", num_classes=10).eval()
    else:
        import torchvision

        reference = torchvision.models.resnet18(num_classes=10).eval()
    save_file(reference.state_dict(), str(tmp_path / "tuned.safetensors"))
    data = manifest_data(backbone={"source": source, "name": "resnet18", "weights": "tuned.safetensors"},
                         num_classes=10, class_names=None)
    result = build_model(validate_manifest(data), weights_dir=tmp_path)
    assert result.reinitialized == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), reference(x), rtol=1e-5, atol=1e-5)
    # Another class count keeps the trunk and starts the head anew.
    other = build_model(validate_manifest({**data, "num_classes": 3}), weights_dir=tmp_path)
    assert other.reinitialized == ["head.fc.bias", "head.fc.weight"]
