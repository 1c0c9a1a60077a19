import pytest
import torch
from heads_segmentation.model import choose_roles, deeplabv3plus_rates
from torch import nn
from torch.nn import functional as F

from .conftest import SMALL, backbone, build, seeded_input, small

ARCHITECTURES = ["fcn", "deeplabv3", "deeplabv3plus", "lraspp"]


@pytest.fixture(scope="module")
def small_models():
    return {architecture: small(architecture)[1].model for architecture in ARCHITECTURES}


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("size", [(97, 131), (200, 630), (64, 64), (33, 47)])
def test_output_has_input_size(small_models, architecture, size):
    model = small_models[architecture]
    with torch.no_grad():
        out = model(seeded_input(1, 3, *size))["out"]
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


def test_large_square_input():
    _, result = build(backbone=backbone("torchvision", "mobilenet_v3_small", output_stride=32))
    with torch.no_grad():
        out = result.model(seeded_input(1, 3, 600, 600))["out"]
    assert out.shape == (1, 3, 600, 600)


def test_swin_input_padded_to_patch_size():
    _, result = build(architecture="lraspp", backbone=backbone("timm", "swin_tiny_patch4_window7_224"))
    model = result.model
    assert model.size_divisor == 4
    x = seeded_input(1, 3, 97, 131)
    with torch.no_grad():
        out = model(x)["out"]
        padded = model(F.pad(x, (0, 1, 0, 3)))["out"]
    assert out.shape == (1, 3, 97, 131)
    # Padding an input to the multiple it is padded to anyway changes nothing but the crop.
    assert torch.allclose(out, padded[..., :97, :131], atol=1e-5)


@pytest.mark.parametrize("architecture", ["fcn", "deeplabv3", "deeplabv3plus"])
def test_aux_output_on_request(architecture):
    _, result = small(architecture, aux_classifier=True)
    model = result.model
    assert model.aux_classifier is not None
    with torch.no_grad():
        outputs = model(seeded_input(2, 3, 65, 70))
    assert list(outputs) == ["out", "aux"]
    assert outputs["aux"].shape == (2, 3, 65, 70)


def test_aux_absent_by_default(small_models):
    for architecture, model in small_models.items():
        assert model.aux_classifier is None, architecture
        with torch.no_grad():
            assert list(model(seeded_input(1, 3, 64, 64))) == ["out"], architecture


@pytest.mark.parametrize("in_chans", [1, 4])
def test_other_input_channels(in_chans):
    preprocess = {"input_size": [64, 64], "mean": [0.5] * in_chans, "std": [0.25] * in_chans}
    for architecture in ("deeplabv3plus", "lraspp"):
        spec = {**SMALL[architecture], "in_chans": in_chans}
        _, result = build(architecture=architecture, backbone=spec, preprocess=preprocess)
        with torch.no_grad():
            assert result.model(seeded_input(1, in_chans, 50, 70))["out"].shape == (1, 3, 50, 70)
        with pytest.raises(ValueError, match=rf"expected images of shape \(N, {in_chans}, H, W\), got \(1, 3, 50, 70\)"):
            result.model(seeded_input(1, 3, 50, 70))


@pytest.mark.parametrize("architecture", ["fcn", "lraspp"])
def test_train_batch_of_one_works(architecture):
    _, result = small(architecture)
    model = result.model.train()
    out = model(seeded_input(1, 3, 64, 64))["out"]
    out.mean().backward()
    assert model.classifier.parameters().__next__().grad is not None


@pytest.mark.parametrize("architecture", ["deeplabv3", "deeplabv3plus"])
def test_train_batch_of_one_explains_batchnorm(architecture):
    _, result = small(architecture)
    model = result.model.train()
    with pytest.raises(ValueError) as caught:
        model(seeded_input(1, 3, 64, 64))
    text = str(caught.value)
    assert f"{architecture} in train mode got a batch of 1 image" in text
    assert "batch statistics need at least two samples" in text
    assert "train with batches of 2 or more images" in text
    assert "eval mode" in text


@pytest.mark.parametrize("architecture", ["deeplabv3", "deeplabv3plus"])
def test_train_batch_of_one_with_frozen_batchnorm(architecture):
    _, result = small(architecture)
    model = result.model.train()
    model.apply(lambda m: m.eval() if isinstance(m, nn.BatchNorm2d) else None)
    out = model(seeded_input(1, 3, 64, 64))["out"]
    assert out.shape == (1, 3, 64, 64)


def test_train_tiny_map_explains_batchnorm():
    _, result = small("fcn")
    model = result.model.train()
    with pytest.raises(ValueError) as caught:
        model(seeded_input(1, 3, 8, 8))
    text = str(caught.value)
    assert "fcn in train mode got 1 image(s) of 8x8" in text
    assert "batch statistics need at least two samples" in text


def _synthetic_batch():
    """Two images whose class is given by their left, middle and right thirds, with a brightness cue."""
    generator = torch.Generator().manual_seed(3)
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, :, 21:42] = 1
    target[:, :, 42:] = 2
    images = 0.3 * torch.randn(2, 3, 64, 64, generator=generator) + target.unsqueeze(1).float()
    return images, target


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_optimiser_steps_lower_loss(architecture):
    aux = architecture != "lraspp"
    _, result = small(architecture, aux_classifier=aux)
    model = result.model.train()
    images, target = _synthetic_batch()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss_of(outputs):
        loss = F.cross_entropy(outputs["out"], target)
        if "aux" in outputs:
            loss = loss + 0.5 * F.cross_entropy(outputs["aux"], target)
        return loss

    losses = []
    for _ in range(6):
        optimiser.zero_grad()
        loss = loss_of(model(images))
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        final = loss_of(model.train()(images)).item()
    assert losses[-1] < losses[0]
    assert final < losses[0]


def test_deeplabv3plus_rates_scale_with_stride():
    assert deeplabv3plus_rates(16) == (6, 12, 18)
    assert deeplabv3plus_rates(8) == (12, 24, 36)
    assert deeplabv3plus_rates(32) == (3, 6, 9)


@pytest.mark.parametrize(
    ("architecture", "kind", "strides", "aux", "expected"),
    [
        ("fcn", "resnet", [4, 8, 8, 8], True, {"out": 3, "aux": 2}),
        ("deeplabv3plus", "resnet", [4, 8, 16, 16], False, {"out": 3, "low": 0}),
        ("lraspp", "resnet", [4, 8, 16, 16], False, {"high": 3, "low": 1}),
        ("lraspp", "resnet", [4, 8, 8, 8], False, {"high": 3, "low": 0}),
        ("lraspp", "mobilenet_v3", [2, 4, 8, 16, 16, 16], False, {"high": 5, "low": 2}),
        ("deeplabv3", "mobilenet_v3", [2, 4, 8, 16, 16, 16], True, {"out": 5, "aux": 2}),
        ("deeplabv3plus", "timm", [2, 4, 8, 16, 32], True, {"out": 4, "low": 1, "aux": 3}),
        ("lraspp", "timm", [4, 8, 16, 32], False, {"high": 3, "low": 1}),
    ],
)
def test_level_roles(architecture, kind, strides, aux, expected):
    assert choose_roles(architecture, kind, strides, aux) == expected


def test_torchvision_mobilenet_levels_match_torchvision():
    _, result = build(backbone=backbone("torchvision", "mobilenet_v3_large"))
    assert result.model.backbone.returns == {"high": "16", "low": "4"}
    assert list(result.model.backbone.keys())[-1] == "16"


def test_resnet_aux_reads_layer3():
    _, result = build(architecture="fcn", backbone=backbone("torchvision", "resnet18"), aux_classifier=True)
    backbone_module = result.model.backbone
    assert backbone_module.returns == {"out": "layer4", "aux": "layer3"}
    assert "fc" not in backbone_module and "avgpool" not in backbone_module


def test_bad_timm_weights_file_not_blamed_on_stride(tmp_path):
    from heads_core import CheckpointError, build_model, validate_manifest

    from .conftest import seg_data

    (tmp_path / "garbage.safetensors").write_bytes(b"\xff" * 256)
    manifest = validate_manifest(seg_data(
        architecture="fcn", backbone={**SMALL["fcn"], "output_stride": 8, "weights": str(tmp_path / "garbage.safetensors")},
    ))
    with pytest.raises(CheckpointError) as raised:
        build_model(manifest)
    assert str(raised.value).startswith(f"{tmp_path / 'garbage.safetensors'}: not a readable safetensors file")
    assert "dilated" not in str(raised.value)
