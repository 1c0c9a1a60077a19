"""The zoo command on detection checkpoints, run in a subprocess as a user runs it, on a real photograph."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import heads_core
import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data as skimage_data

from .conftest import manifest_data

REPOSITORY = Path(__file__).resolve().parents[3]
MANIFEST_FOLDERS = [REPOSITORY / "zoo-manifests" / "detection", REPOSITORY / "zoo-manifests" / "instance_segmentation"]


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)


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


def _build(tmp_path: Path, architecture: str) -> Path:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    _write_manifest(manifests, architecture)
    built = zoo("build", str(manifests), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    checkpoint = tmp_path / "out" / f"cli-{architecture.replace('_', '-')}-1.0.0.safetensors"
    assert checkpoint.is_file()
    return checkpoint


def _changed_pixels(first: Path, second: Path) -> int:
    a = np.asarray(Image.open(first).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(second).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape
    return int((np.abs(a - b).sum(axis=2) > 0).sum())


def test_faster_rcnn_build_inspect_predict_draw(tmp_path: Path, photograph: Path) -> None:
    checkpoint = _build(tmp_path, "faster_rcnn")

    inspected = zoo("inspect", str(checkpoint), "--json", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    outputs = json.loads(inspected.stdout)["outputs"]
    assert outputs["label_range"] == [1, 3]
    assert outputs["architecture"] == "faster_rcnn"

    drawn = tmp_path / "drawn.png"
    predicted = zoo("predict", str(checkpoint), str(photograph), "--draw", str(drawn), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    lines = [line.strip() for line in predicted.stdout.splitlines()[1:] if line.strip()]
    assert lines
    pattern = re.compile(r"^\d+\.\d\d%  (cat|dog|bird) \(id [123]\)  box \(")
    assert all(pattern.match(line) for line in lines), lines
    assert _changed_pixels(photograph, drawn) > 500


@pytest.mark.heavy
def test_mask_rcnn_predict_draws_masks(tmp_path: Path, photograph: Path) -> None:
    checkpoint = _build(tmp_path, "mask_rcnn")
    drawn = tmp_path / "drawn.png"
    predicted = zoo("predict", str(checkpoint), str(photograph), "--draw", str(drawn), "--json", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    [result] = json.loads(predicted.stdout)
    assert result["detections"]
    assert result["drawn"] == str(drawn)
    assert all(d["mask"]["size"] == [512, 512] for d in result["detections"])
    assert _changed_pixels(photograph, drawn) > 500


@pytest.mark.parametrize("folder", MANIFEST_FOLDERS, ids=lambda p: p.name)
def test_zoo_manifests_validate(folder: Path) -> None:
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        manifest = heads_core.load_manifest(path)
        assert manifest.task == folder.name
        assert manifest.weights is None
