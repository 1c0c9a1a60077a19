"""The segmentation manifests of the zoo: every decoder on its default backbone, plus timm and torchvision others."""

from pathlib import Path

import pytest
import torch
from heads_core import build_model, load_manifest, load_model, save_model

MANIFESTS = sorted((Path(__file__).resolve().parents[3] / "zoo-manifests" / "segmentation").glob("*.yaml"))
DEFAULT_BACKBONES = {
    "fcn": "resnet50",
    "deeplabv3": "resnet50",
    "deeplabv3plus": "resnet50",
    "lraspp": "mobilenet_v3_large",
}


def test_zoo_covers_every_decoder_and_other_backbones():
    manifests = [load_manifest(path) for path in MANIFESTS]
    pairs = {(m.architecture, m.backbone.source, m.backbone.name) for m in manifests}
    for architecture, name in DEFAULT_BACKBONES.items():
        assert (architecture, "torchvision", name) in pairs, architecture
    others = {(m.backbone.source, m.backbone.name) for m in manifests} - {("torchvision", n) for n in DEFAULT_BACKBONES.values()}
    assert len(others) >= 3
    assert {source for source, _ in others} == {"timm", "torchvision"}
    for manifest in manifests:
        assert manifest.weights is None and manifest.backbone.weights is None, manifest.name


@pytest.mark.heavy
@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_zoo_manifest_builds_and_loads(tmp_path, path):
    manifest = load_manifest(path)
    result = build_model(path)
    checkpoint = tmp_path / "model.safetensors"
    save_model(result.model, manifest, checkpoint, result.reinitialized)
    loaded = load_model(checkpoint)
    x = torch.randn(1, manifest.backbone.in_chans, 97, 131)
    with torch.no_grad():
        expected = result.model(x)
        actual = loaded.model(x)
    for key in expected:
        assert actual[key].shape == (1, manifest.num_classes, 97, 131)
        assert torch.equal(actual[key], expected[key]), key
