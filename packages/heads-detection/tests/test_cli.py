"""The zoo command on detection checkpoints, run in a subprocess as a user runs it, on a real photograph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import heads_core
import pytest
import yaml
from PIL import Image
from skimage import data as skimage_data

from .conftest import manifest_data

REPOSITORY = Path(__file__).resolve().parents[3]
MANIFEST_FOLDERS = [REPOSITORY / "zoo-manifests" / "detection", REPOSITORY / "zoo-manifests" / "instance_segmentation"]


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture
def photograph(tmp_path: Path) -> Path:
    """Save scikit-image's astronaut photograph (512x512 RGB) as a JPEG file."""
    path = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(path, quality=90)
    return path


def _write_manifest(folder: Path, architecture: str) -> None:
    data = manifest_data(architecture, min_size=160, max_size=200)
    data["name"] = f"cli-{architecture.replace('_', '-')}"
    (folder / f"{architecture}.yaml").write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("architecture", ["faster_rcnn", "mask_rcnn"])
def test_build_inspect_predict_draw(architecture: str, tmp_path: Path, photograph: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    _write_manifest(manifests, architecture)
    built = zoo("build", str(manifests), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    checkpoint = tmp_path / "out" / f"cli-{architecture.replace('_', '-')}-1.0.0.safetensors"
    assert checkpoint.is_file()

    inspected = zoo("inspect", str(checkpoint), "--json", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    outputs = json.loads(inspected.stdout)["outputs"]
    assert outputs["label_range"] == [1, 3]
    assert outputs["architecture"] == architecture

    drawn_path = tmp_path / "drawn.png"
    predicted = zoo("predict", str(checkpoint), str(photograph), "--draw", str(drawn_path), "--json", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    [result] = json.loads(predicted.stdout)
    detections = result["detections"]
    assert detections
    assert result["drawn"] == str(drawn_path)
    assert {d["class_name"] for d in detections} <= {"cat", "dog", "bird"}
    assert all(1 <= d["class_id"] <= 3 for d in detections)
    if architecture == "mask_rcnn":
        assert all(d["mask"]["size"] == [512, 512] for d in detections)

    original = Image.open(photograph).convert("RGB")
    drawn = Image.open(drawn_path)
    assert drawn.size == original.size
    changed = sum(a != b for a, b in zip(original.getdata(), drawn.getdata()))
    assert changed > 500

    text = zoo("predict", str(checkpoint), str(photograph), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    first = detections[0]
    assert f"{first['class_name']} (id {first['class_id']})" in text.stdout


@pytest.mark.parametrize("folder", MANIFEST_FOLDERS, ids=lambda p: p.name)
def test_zoo_manifests_validate(folder: Path) -> None:
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        manifest = heads_core.load_manifest(path)
        assert manifest.task == folder.name
        assert manifest.weights is None
