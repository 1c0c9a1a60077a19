"""The oriented_detection task through heads-core: manifests, checkpoints, prediction and drawing."""

from __future__ import annotations

import json
import math

import pytest
import torch
from heads_core import (
    ManifestError,
    build_model,
    get_plugin,
    inspect_checkpoint,
    load_model,
    save_model,
    validate_manifest,
)
from heads_detection.oriented.geometry import boxes_to_polygons
from heads_detection.oriented.plugin import OrientedDetectionManifest
from heads_detection.oriented.synthetic import SyntheticRectangles
from PIL import Image

from .conftest import oriented_manifest_data

ARCHITECTURES = ("fcos", "retinanet")


def test_task_is_registered():
    plugin = get_plugin("oriented_detection")
    assert plugin.manifest_type is OrientedDetectionManifest


def test_defaults_are_filled():
    data = oriented_manifest_data()
    del data["min_size"], data["max_size"]
    manifest = validate_manifest(data)
    assert (manifest.min_size, manifest.max_size, manifest.fixed_size) == (800, 1333, None)
    assert manifest.backbone.frozen_batchnorm is False
    assert manifest.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert manifest.option("head_convs") == 1
    assert manifest.option("center_sampling_radius") == 1.5
    assert manifest.names() == ["ship", "plane"]


def test_fixed_size_backbone_gets_its_size():
    data = oriented_manifest_data(backbone={"source": "timm", "name": "vit_small_patch16_224"})
    del data["min_size"], data["max_size"]
    manifest = validate_manifest(data)
    assert manifest.fixed_size == (224, 224)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"architecture": "retinanet", "head_convs": 2}, "head_convs applies to architecture fcos only"),
        ({"anchor_scale": 3.0}, "anchor_scale applies to architecture retinanet only"),
        ({"class_names": ["ship"]}, "class_names has 1 entries but num_classes is 2"),
        ({"min_size": 128, "max_size": 64}, "min_size 128 is larger than max_size 64"),
        ({"fpn_channels": 48}, "multiple of 32"),
        ({"architecture": "ssd"}, "architecture"),
        ({"num_classes": 0}, "num_classes"),
        ({"fixed_size": [96, 96]}, "not both"),
    ],
)
def test_invalid_manifests_name_the_fix(fields, message):
    with pytest.raises(ManifestError, match=message):
        validate_manifest(oriented_manifest_data(**fields))


def test_backbone_level_that_does_not_exist():
    for name in ("resnet18", "mobilenet_v3_small"):
        backbone = {"source": "torchvision", "name": name, "levels": [2, 3, 9]}
        manifest = validate_manifest(oriented_manifest_data(backbone=backbone))
        with pytest.raises(ValueError, match="9"):
            build_model(manifest)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def saved(request, tmp_path_factory):
    manifest = validate_manifest(oriented_manifest_data(request.param, score_threshold=0.0))
    built = build_model(manifest)
    path = tmp_path_factory.mktemp(request.param) / "model.safetensors"
    save_model(built.model, manifest, path, built.reinitialized)
    return manifest, built.model, path


def test_loaded_outputs_equal_built_outputs(saved):
    _, built, path = saved
    loaded = load_model(path).model
    images = [torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1)), torch.rand(3, 72, 64)]
    built.eval()
    with torch.no_grad():
        raw_built, _, _ = built.run_head(images)
        raw_loaded, _, _ = loaded.run_head(images)
        detections_built, detections_loaded = built(images), loaded(images)
    for key in raw_built:
        for first, second in zip(raw_built[key], raw_loaded[key]):
            assert torch.equal(first, second), key
    for first, second in zip(detections_built, detections_loaded):
        assert first["boxes"].shape[0] > 0
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(first[key], second[key]), key


def test_checkpoint_describes_rotated_boxes(saved):
    manifest, _, path = saved
    header, loaded_manifest = inspect_checkpoint(path)
    outputs = header.json_field("zoo.outputs")
    assert loaded_manifest == manifest
    assert outputs["kind"] == "oriented_boxes"
    assert outputs["box_format"] == "cxcywha"
    assert "radians" in outputs["boxes"]
    assert "clockwise" in outputs["boxes"]
    assert outputs["label_range"] == [1, 2]
    assert outputs["class_names"] == {"1": "ship", "2": "plane"}


def test_predict_format_and_draw(saved):
    manifest, model, _ = saved
    plugin = get_plugin("oriented_detection")
    image, _ = SyntheticRectangles(image_size=64).sample(torch.Generator().manual_seed(2))
    picture = Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy())
    tensor = plugin.prepare_image(picture, manifest)
    assert tuple(tensor.shape) == (3, 64, 64)
    prediction = plugin.predict(model, [tensor], manifest)[0]
    json.dumps(prediction)
    detections = prediction["detections"]
    assert 0 < len(detections) <= 20
    first = detections[0]
    assert first["class_name"] in ("ship", "plane")
    assert len(first["box"]) == 5
    assert first["angle_degrees"] == pytest.approx(math.degrees(first["box"][4]), abs=1e-3)
    corners = boxes_to_polygons(torch.tensor([first["box"]], dtype=torch.float64))[0]
    assert torch.allclose(torch.tensor(first["polygon"], dtype=torch.float64), corners, atol=0.02)
    lines = plugin.format_prediction(prediction, manifest)
    assert len(lines) == len(detections)
    assert "angle" in lines[0]
    assert first["class_name"] in lines[0]
    assert plugin.format_prediction({"detections": []}, manifest) == ["no detections with score above 0.0"]


def test_draw_outlines_rotated_box():
    plugin = get_plugin("oriented_detection")
    manifest = validate_manifest(oriented_manifest_data())
    box = [64.0, 64.0, 80.0, 30.0, math.radians(30)]
    polygon = boxes_to_polygons(torch.tensor([box], dtype=torch.float64))[0].tolist()
    prediction = {"detections": [{"class_id": 1, "class_name": "ship", "score": 0.9, "box": box, "angle_degrees": 30.0, "polygon": polygon}]}
    blank = Image.new("RGB", (128, 128), (0, 0, 0))
    drawn = plugin.draw(blank, prediction, manifest)
    assert drawn.size == blank.size
    # Midpoints of the short edges lie on the outline; the centre stays untouched.
    for a, b in ((1, 2), (3, 0)):
        x = round((polygon[a][0] + polygon[b][0]) / 2)
        y = round((polygon[a][1] + polygon[b][1]) / 2)
        assert drawn.getpixel((x, y)) != (0, 0, 0)
    assert drawn.getpixel((64, 64)) == (0, 0, 0)
    # An axis-aligned box around the polygon would colour this corner; the rotated outline does not.
    assert drawn.getpixel((round(polygon[0][0]) - 3, round(polygon[3][1]) - 2)) == (0, 0, 0)
