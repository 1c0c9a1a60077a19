"""Full-model pretrained weights: torchvision COCO files, state-dict files and earlier zoo checkpoints.

No weights can be downloaded here, so the tests write files where torch hub
keeps torchvision's downloads, under a temporary TORCH_HOME, with randomly
initialised tensors of the right names and shapes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from heads_core import (
    WeightsNotFoundError,
    adapt_input_conv,
    build_model,
    load_model,
    save_model,
)
from heads_core.checkpoint import read_header
from torchvision.models import detection
from torchvision.ops.misc import FrozenBatchNorm2d

from .conftest import ALL_ARCHITECTURES, sample_images, small_manifest

COCO_CLASSES = 91  # torchvision's COCO models: 90 category ids plus background


def _write_coco_file(checkpoints: Path) -> dict[str, torch.Tensor]:
    """Write a stand-in for torchvision's Faster R-CNN COCO_V1 file and return its tensors.

    The real file contains frozen batch norms, which have no num_batches_tracked.
    """
    torch.manual_seed(5)
    model = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=COCO_CLASSES)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    url = detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url
    torch.save(state, checkpoints / os.path.basename(url))
    return state


def _coco_manifest(num_classes: int, **fields: object) -> object:
    return small_manifest("faster_rcnn", "torchvision", "resnet50", weights="COCO_V1", num_classes=num_classes, class_names=None, **fields)


def test_faster_rcnn_two_classes_from_coco(torch_home: Path, tmp_path: Path) -> None:
    coco = _write_coco_file(torch_home)
    manifest = _coco_manifest(2)
    result = build_model(manifest)
    model = result.model

    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.box_predictor.bbox_pred.out_features == 12
    own = model.state_dict()
    backbone_keys = [k for k in coco if k.startswith("backbone.")]
    assert len(backbone_keys) > 200
    for key in backbone_keys:
        assert torch.equal(own[key], coco[key]), key
    for key in [k for k in coco if k.startswith("rpn.")]:
        assert torch.equal(own[key], coco[key]), key
    expected = sorted(f"roi_heads.box_predictor.{layer}.{kind}" for layer in ("cls_score", "bbox_pred") for kind in ("weight", "bias"))
    assert result.reinitialized == expected

    path = tmp_path / "coco2.safetensors"
    save_model(model, manifest, path, result.reinitialized)
    assert json.loads(read_header(path).metadata["zoo.reinitialized"]) == expected
    loaded = load_model(path).model
    assert {m.eps for m in loaded.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}
    images = sample_images()[:1]
    with torch.no_grad():
        built_boxes = model(images)[0]["boxes"]
        loaded_boxes = loaded(images)[0]["boxes"]
    assert torch.equal(loaded_boxes, built_boxes)


def test_coco_weights_equal_torchvision_builder(torch_home: Path) -> None:
    _write_coco_file(torch_home)
    reference = detection.fasterrcnn_resnet50_fpn(
        weights="COCO_V1",
        min_size=96,
        max_size=128,
        box_detections_per_img=10,
        rpn_pre_nms_top_n_test=64,
        rpn_post_nms_top_n_test=64,
    )
    ours = build_model(_coco_manifest(COCO_CLASSES - 1))
    assert ours.reinitialized == []
    frozen = [m for m in ours.model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen
    assert {m.eps for m in frozen} == {0.0}
    assert [n for n, p in ours.model.named_parameters() if p.requires_grad] == [
        n for n, p in reference.named_parameters() if p.requires_grad
    ]

    reference.eval()
    images = sample_images()
    with torch.no_grad():
        expected = reference(images)
        actual = ours.model(images)
    for want, got in zip(expected, actual):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(got[key], want[key]), key


def test_four_channel_model_adapts_coco_conv(torch_home: Path) -> None:
    coco = _write_coco_file(torch_home)
    model = build_model(_coco_manifest(2, backbone={"in_chans": 4})).model
    conv = model.state_dict()["backbone.body.conv1.weight"]
    assert conv.shape == (64, 4, 7, 7)
    assert torch.equal(conv, adapt_input_conv(coco["backbone.body.conv1.weight"], 4))


def test_missing_coco_file_names_the_path(torch_home: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as raised:
        build_model(_coco_manifest(2))
    assert str(torch_home / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth") in str(raised.value)
    assert "TORCH_HOME" in str(raised.value)


# State-dict prefixes that must be initialised anew for a new class count, per architecture.
REPLACED = {
    "faster_rcnn": ("roi_heads.box_predictor.",),
    "mask_rcnn": ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits."),
    "retinanet": ("head.classification_head.cls_logits.",),
    "fcos": ("head.classification_head.cls_logits.",),
    "ssd": ("head.classification_head.",),
    "ssdlite": ("head.classification_head.",),
}


@pytest.mark.parametrize("architecture", ALL_ARCHITECTURES)
def test_new_class_count_from_zoo_checkpoint(architecture: str, tmp_path: Path) -> None:
    earlier_manifest = small_manifest(architecture, num_classes=5, class_names=None, seed=1)
    earlier = build_model(earlier_manifest).model
    path = tmp_path / "earlier.safetensors"
    save_model(earlier, earlier_manifest, path)

    manifest = small_manifest(architecture, num_classes=2, class_names=["a", "b"], weights=str(path))
    result = build_model(manifest)

    assert result.reinitialized
    assert all(name.startswith(REPLACED[architecture]) for name in result.reinitialized)
    old, new = earlier.state_dict(), result.model.state_dict()
    for key, tensor in new.items():
        if key in result.reinitialized:
            assert tensor.shape != old[key].shape, key
        else:
            assert torch.equal(tensor, old[key]), key
    result.model.eval()
    with torch.no_grad():
        labels = result.model(sample_images()[:1])[0]["labels"]
    assert ((labels >= 1) & (labels <= 2)).all()


@pytest.mark.parametrize("architecture", ["retinanet", "fcos"])
def test_dense_head_class_count_agrees(architecture: str, tmp_path: Path) -> None:
    earlier_manifest = small_manifest(architecture, num_classes=7, class_names=None)
    earlier = build_model(earlier_manifest).model
    path = tmp_path / "earlier.pth"
    torch.save(earlier.state_dict(), path)

    model = build_model(small_manifest(architecture, num_classes=2, class_names=None, weights=str(path))).model
    head = model.head.classification_head
    assert head.num_classes == 3
    assert head.cls_logits.out_channels == head.num_anchors * head.num_classes
    assert head.cls_logits.bias.shape == (head.num_anchors * 3,)


def test_relative_weights_path_starts_at_manifest_folder(tmp_path: Path) -> None:
    earlier_manifest = small_manifest("fcos", num_classes=4, class_names=None)
    earlier = build_model(earlier_manifest).model
    (tmp_path / "weights").mkdir()
    torch.save(earlier.state_dict(), tmp_path / "weights" / "fcos.pth")

    result = build_model(small_manifest("fcos", weights="weights/fcos.pth"), weights_dir=tmp_path)
    assert result.reinitialized == ["head.classification_head.cls_logits.bias", "head.classification_head.cls_logits.weight"]


def test_checkpoint_of_other_architecture_rejected(tmp_path: Path) -> None:
    manifest = small_manifest("fcos")
    path = tmp_path / "fcos.safetensors"
    save_model(build_model(manifest).model, manifest, path)
    with pytest.raises(ValueError, match="hold fcos on torchvision:resnet18, but this manifest builds retinanet"):
        build_model(small_manifest("retinanet", weights=str(path)))


def test_weights_of_other_backbone_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save(build_model(small_manifest("fcos", "torchvision", "resnet34")).model.state_dict(), path)
    with pytest.raises(ValueError, match="missing .* tensors .*unexpected"):
        build_model(small_manifest("fcos", weights=str(path)))


def test_zero_eps_checkpoint_needs_same_eps(tmp_path: Path) -> None:
    manifest = small_manifest("fcos", backbone={"frozen_batchnorm": True, "frozen_batchnorm_eps": 0.0})
    path = tmp_path / "eps0.safetensors"
    save_model(build_model(manifest).model, manifest, path)
    with pytest.raises(ValueError, match=r"set backbone.frozen_batchnorm_eps: 0.0"):
        build_model(small_manifest("fcos", weights=str(path)))
    reloaded = build_model(small_manifest("fcos", weights=str(path), backbone={"frozen_batchnorm_eps": 0.0})).model
    assert {m.eps for m in reloaded.modules() if isinstance(m, FrozenBatchNorm2d)} == {0.0}


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError, match="absent.pth"):
        build_model(small_manifest("fcos", weights=str(tmp_path / "absent.pth")))


def test_loaded_model_keeps_frozen_layers(tmp_path: Path) -> None:
    manifest = small_manifest("faster_rcnn", backbone={"trainable_layers": 2})
    built = build_model(manifest).model
    path = tmp_path / "frozen.safetensors"
    save_model(built, manifest, path)
    loaded = load_model(path).model
    frozen_built = [n for n, p in built.named_parameters() if not p.requires_grad]
    frozen_loaded = [n for n, p in loaded.named_parameters() if not p.requires_grad]
    assert frozen_built
    assert frozen_loaded == frozen_built


def test_ssdlite_backbone_weights_keep_full_tail(tmp_path: Path) -> None:
    from torchvision.models import mobilenet_v3_large

    torch.save(mobilenet_v3_large().state_dict(), tmp_path / "mobilenet.pth")
    manifest = small_manifest("ssdlite", "torchvision", "mobilenet_v3_large", backbone={"weights": "mobilenet.pth"})
    built = build_model(manifest, weights_dir=tmp_path).model
    # torchvision halves the last stage's channels (reduced tail) only without backbone weights.
    assert built.backbone.features[1][-1].out_channels == 960

    path = tmp_path / "ssdlite.safetensors"
    save_model(built, manifest, path)
    loaded = load_model(path).model
    assert loaded.backbone.features[1][-1].out_channels == 960
    images = sample_images()
    with torch.no_grad():
        expected = built(images)
        actual = loaded(images)
    for want, got in zip(expected, actual):
        for key in want:
            assert torch.equal(got[key], want[key]), key
