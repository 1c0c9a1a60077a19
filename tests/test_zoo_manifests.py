"""Every manifest in zoo-manifests/ builds, saves, reloads with identical outputs, and predicts."""

from __future__ import annotations

from pathlib import Path

import heads_core
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted(p for p in (ROOT / "zoo-manifests").rglob("*") if p.suffix in (".yaml", ".yml", ".json", ".toml"))


def test_zoo_has_manifests_for_core_tasks():
    tasks = {heads_core.read_manifest_data(p)["task"] for p in MANIFESTS}
    assert {"classification", "anomaly_detection", "regression"} <= tasks
    assert len(MANIFESTS) >= 10


@pytest.mark.heavy
@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(ROOT / "zoo-manifests")) for p in MANIFESTS])
def test_manifest_builds_and_reloads(path, tmp_path):
    manifest = heads_core.load_manifest(path)
    result = heads_core.build_model(manifest, weights_dir=path.parent)
    target = tmp_path / heads_core.checkpoint_filename(manifest)
    heads_core.save_model(result.model, manifest, target, result.reinitialized)
    loaded = heads_core.load_model(target)
    plugin = heads_core.get_plugin(manifest.task)
    from PIL import Image

    # One band per input channel: an RGB+NIR model takes four bands, not RGB.
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[manifest.backbone.in_chans]
    image = Image.new(mode, (96, 80), (120, 60, 30, 200)[: len(mode)] if mode != "L" else 90)
    tensor = plugin.prepare_image(image, manifest)
    expected = plugin.predict(result.model, [tensor], manifest)
    assert plugin.predict(loaded.model, [tensor], manifest) == expected
    assert torch.equal(
        torch.cat([t.flatten() for t in loaded.model.state_dict().values() if t.is_floating_point()][:5]),
        torch.cat([t.flatten() for t in result.model.state_dict().values() if t.is_floating_point()][:5]),
    )
