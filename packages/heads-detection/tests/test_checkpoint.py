"""Checkpoints: a loaded detector computes exactly what the built one does, and the header describes it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from heads_core import (
    build_model,
    canonical_json,
    inspect_checkpoint,
    load_model,
    save_model,
)
from heads_core.checkpoint import read_header

from .conftest import ALL_ARCHITECTURES, sample_images, small_manifest


@pytest.mark.parametrize("architecture", ALL_ARCHITECTURES)
def test_loaded_outputs_equal_built(architecture: str, tmp_path: Path) -> None:
    # A low threshold, so that randomly initialised RetinaNet and FCOS report detections too.
    manifest = small_manifest(architecture, score_threshold=0.001)
    built = build_model(manifest).model
    path = tmp_path / "model.safetensors"
    save_model(built, manifest, path)
    loaded = load_model(path)

    assert canonical_json(loaded.manifest) == canonical_json(manifest)
    assert type(loaded.model) is type(built)
    images = sample_images()
    with torch.no_grad():
        expected = built(images)
        actual = loaded.model(images)
    assert sum(len(e["boxes"]) for e in expected) > 0
    for want, got in zip(expected, actual):
        assert set(got) == set(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_outputs_header_states_label_convention(tmp_path: Path) -> None:
    manifest = small_manifest("mask_rcnn")
    path = tmp_path / "mask.safetensors"
    save_model(build_model(manifest).model, manifest, path)
    header = read_header(path)
    outputs = json.loads(header.metadata["zoo.outputs"])

    assert header.metadata["zoo.task"] == "instance_segmentation"
    assert outputs["kind"] == "instance_masks"
    assert outputs["label_range"] == [1, 3]
    assert outputs["background_label"] == 0
    assert outputs["class_names"] == {"1": "cat", "2": "dog", "3": "bird"}
    assert outputs["mask_threshold"] == 0.5
    assert outputs["input"]["channels"] == 3
    assert outputs["input"]["min_size"] == 96
    assert json.loads(header.metadata["zoo.reinitialized"]) == []
    _, embedded = inspect_checkpoint(path)
    assert embedded.score_threshold == 0.05


def test_same_manifest_gives_identical_bytes(tmp_path: Path) -> None:
    manifest = small_manifest("retinanet")
    digests = []
    for index in range(2):
        path = tmp_path / f"{index}.safetensors"
        save_model(build_model(manifest).model, manifest, path)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
