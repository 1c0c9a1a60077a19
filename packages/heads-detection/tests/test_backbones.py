"""Backbones under the detectors: level selection, anchors sized to the levels, ViT and Swin, frozen stages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from heads_core import ManifestError, build_model, load_model, save_model
from heads_detection import build_fpn_backbone, measure_maps
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .conftest import sample_images, sample_targets, small_manifest, task_of


def _anchor_sizes(model: nn.Module) -> tuple:
    generator = model.rpn.anchor_generator if hasattr(model, "rpn") else model.anchor_generator
    return generator.sizes


def test_three_levels_give_four_rcnn_anchor_levels() -> None:
    model = build_model(small_manifest("faster_rcnn", backbone={"levels": [2, 3, 4]})).model
    assert _anchor_sizes(model) == ((64,), (128,), (256,), (512,))
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2"]
    with torch.no_grad():
        assert len(model(sample_images())) == 2


def test_three_timm_levels_give_five_retinanet_anchor_levels() -> None:
    model = build_model(small_manifest("retinanet", "timm", "resnet18", backbone={"levels": [1, 2, 3]}, min_size=96, max_size=128)).model
    layout = measure_maps(model.backbone, 3, (256, 256))
    assert layout.strides == [4, 8, 16, 32, 64]
    assert len(_anchor_sizes(model)) == 5
    assert _anchor_sizes(model)[0] == (16, 20, 25)
    with torch.no_grad():
        assert len(model(sample_images())) == 2


def test_two_levels_give_four_fcos_anchor_levels() -> None:
    model = build_model(small_manifest("fcos", backbone={"levels": [3, 4]})).model
    assert _anchor_sizes(model) == ((16,), (32,), (64,), (128,))
    with torch.no_grad():
        assert len(model(sample_images())) == 2


@pytest.mark.parametrize(
    ("architecture", "strides"),
    [("faster_rcnn", [4, 8, 16, 32, 64]), ("retinanet", [8, 16, 32, 64, 128])],
)
def test_default_levels_by_stride(architecture: str, strides: list[int]) -> None:
    spec = small_manifest(architecture, "torchvision", "efficientnet_b0").backbone
    extra = "pool" if architecture == "faster_rcnn" else "p6p7"
    min_stride = 4 if architecture == "faster_rcnn" else 8
    backbone, layout = build_fpn_backbone(
        spec, weights=None, pretrained=False, extra=extra, min_stride=min_stride, measure_size=(256, 256)
    )
    assert layout.strides == strides
    assert measure_maps(backbone, 3, (512, 512)).strides == strides


def test_rcnn_rejects_levels_with_gaps() -> None:
    with pytest.raises(ValueError, match=r"give strides \[4, 16\].*consecutive levels whose strides double"):
        build_model(small_manifest("faster_rcnn", "timm", "resnet18", backbone={"levels": [1, 3]}, min_size=96, max_size=128))


def test_resnet_stem_level_rejected() -> None:
    with pytest.raises(ValueError, match=r"choose levels from 1 \(layer1, stride 4\) to 4"):
        build_model(small_manifest("faster_rcnn", backbone={"levels": [0, 1]}))


def test_ssd_extra_layers_on_any_backbone() -> None:
    model = build_model(small_manifest("ssd", "timm", "efficientnet_b0")).model
    layout = measure_maps(model.backbone, 3, (128, 128))
    assert layout.strides == [16, 32, 64, 128, 128, 128]
    assert len(model.anchor_generator.aspect_ratios) == 6
    with torch.no_grad():
        assert len(model(sample_images())) == 2


def test_ssdlite_on_resnet() -> None:
    model = build_model(small_manifest("ssdlite", "torchvision", "resnet18")).model
    assert measure_maps(model.backbone, 3, (128, 128)).channels == [256, 512, 512, 256, 256, 128]
    with torch.no_grad():
        assert len(model(sample_images())) == 2


TRANSFORMERS = [
    ("faster_rcnn", "vit_small_patch16_224"),
    pytest.param("faster_rcnn", "swin_tiny_patch4_window7_224", marks=pytest.mark.heavy),
    pytest.param("mask_rcnn", "vit_small_patch16_224", marks=pytest.mark.heavy),
    ("mask_rcnn", "swin_tiny_patch4_window7_224"),
]


@pytest.mark.parametrize(("architecture", "backbone"), TRANSFORMERS)
def test_transformer_backbone_trains_runs_and_reloads(architecture: str, backbone: str, tmp_path: Path) -> None:
    manifest = small_manifest(architecture, "timm", backbone)
    assert manifest.fixed_size == (224, 224)
    model = build_model(manifest).model
    layout = measure_maps(model.backbone, 3, (224, 224))
    expected = [8, 16, 32, 64] if backbone.startswith("vit") else [4, 8, 16, 32, 64]
    assert layout.strides == expected

    images = sample_images()
    model.train()
    losses = model(images, sample_targets(images, with_masks=task_of(architecture) == "instance_segmentation"))
    assert all(torch.isfinite(v) for v in losses.values())

    model.eval()
    path = tmp_path / "model.safetensors"
    save_model(model, manifest, path)
    loaded = load_model(path).model
    with torch.no_grad():
        built_outputs = model(images)
        loaded_outputs = loaded(images)
    assert built_outputs[0]["boxes"].shape[0] > 0
    for built, reloaded in zip(built_outputs, loaded_outputs):
        for key in built:
            assert torch.equal(built[key], reloaded[key]), key


def _frozen_prefixes(model: nn.Module, prefix: str) -> set[str]:
    return {name[len(prefix) :].split(".")[0] for name, p in model.named_parameters() if name.startswith(prefix) and not p.requires_grad}


def test_resnet_trainable_layers() -> None:
    model = build_model(small_manifest("faster_rcnn", backbone={"trainable_layers": 2})).model
    # torchvision's rule: the stem's batch norm trains only when all five stages do.
    assert _frozen_prefixes(model, "backbone.body.") == {"conv1", "bn1", "layer1", "layer2"}
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("backbone.fpn."))


def test_pretrained_backbone_defaults_to_three_trainable_stages(tmp_path: Path) -> None:
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), tmp_path / "resnet18.pth")
    manifest = small_manifest("faster_rcnn", backbone={"weights": str(tmp_path / "resnet18.pth")})
    assert manifest.backbone.frozen_batchnorm is True
    model = build_model(manifest).model
    assert _frozen_prefixes(model, "backbone.body.") == {"conv1", "layer1"}
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.backbone.body.modules())
    assert not any(type(m) is nn.BatchNorm2d for m in model.backbone.body.modules())


def test_generic_trainable_layers() -> None:
    manifest = small_manifest("faster_rcnn", "timm", "resnet18", backbone={"trainable_layers": 2}, min_size=96, max_size=128)
    model = build_model(manifest).model
    frozen = {n.split(".")[5] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1", "layer2"}
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("backbone.fpn."))


def test_trainable_layers_out_of_range() -> None:
    manifest = small_manifest("fcos", "timm", "resnet18", backbone={"trainable_layers": 9}, min_size=96, max_size=128)
    with pytest.raises(ValueError, match="trainable_layers is 9, but this backbone has 5 stages; choose a value from 0"):
        build_model(manifest)


def test_frozen_batchnorm_keeps_layer_eps() -> None:
    # torchvision's MobileNetV3 uses batch-norm epsilon 0.001 instead of the usual 1e-5.
    manifest = small_manifest("retinanet", "torchvision", "mobilenet_v3_small", backbone={"frozen_batchnorm": True})
    model = build_model(manifest).model
    frozen = [m for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen
    assert {m.eps for m in frozen} == {1e-3}
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.body.modules())


def test_unknown_backbone_suggests_names() -> None:
    with pytest.raises(ManifestError, match="did you mean"):
        small_manifest("fcos", "torchvision", "resnet_18")
