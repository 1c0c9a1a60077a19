"""The zoo command on oriented manifests, the synthetic data and the training example, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from heads_core import load_model
from heads_detection.oriented.geometry import enclosing_boxes
from heads_detection.oriented.iou import pairwise_rotated_iou
from heads_detection.oriented.synthetic import SyntheticRectangles
from PIL import Image

from .conftest import oriented_manifest_data

REPOSITORY = Path(__file__).resolve().parents[4]
MANIFESTS = REPOSITORY / "zoo-manifests" / "oriented_detection"
EXAMPLE = REPOSITORY / "packages" / "heads-detection" / "examples" / "train_oriented_fcos.py"


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "2"}
    return subprocess.run(command, check=False, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "zoo", *args, cwd=cwd)


# --- synthetic data -----------------------------------------------------------


def test_synthetic_data_is_reproducible():
    generator = SyntheticRectangles(image_size=64)
    first, second = generator.dataset(3, seed=5), generator.dataset(3, seed=5)
    for (image_a, target_a), (image_b, target_b) in zip(first, second):
        assert torch.equal(image_a, image_b)
        assert torch.equal(target_a["boxes"], target_b["boxes"])
        assert torch.equal(target_a["labels"], target_b["labels"])


def test_synthetic_boxes_inside_and_apart():
    generator = SyntheticRectangles(image_size=96, num_classes=3, max_objects=4)
    for image, target in generator.dataset(20, seed=6):
        boxes, labels = target["boxes"], target["labels"]
        assert tuple(image.shape) == (3, 96, 96)
        assert float(image.min()) >= 0.0
        assert float(image.max()) <= 1.0
        assert 1 <= boxes.shape[0] <= 4
        assert bool(((labels >= 1) & (labels <= 3)).all())
        extent = enclosing_boxes(boxes)
        assert float(extent[:, :2].min()) >= 1.0
        assert float(extent[:, 2:].max()) <= 95.0
        overlaps = pairwise_rotated_iou(boxes, boxes) - torch.eye(boxes.shape[0])
        assert float(overlaps.abs().max()) < 1e-6


def test_synthetic_pixels_cover_the_boxes():
    generator = SyntheticRectangles(image_size=96, num_classes=1, min_objects=1, max_objects=1, noise=0.0)
    for image, target in generator.dataset(10, seed=7):
        box = target["boxes"][0]
        background = image[:, 0, 0]
        fill = image[:, int(box[1]), int(box[0])]
        channel = int((fill - background).abs().argmax())
        coverage = (image[channel] - background[channel]) / (fill[channel] - background[channel])
        assert float(coverage.sum()) == pytest.approx(float(box[2] * box[3]), rel=0.01)


# --- the zoo command -------------------------------------------------------------


def test_zoo_validates_the_oriented_manifests(tmp_path):
    result = zoo("validate", str(MANIFESTS), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("oriented_detection") >= 4
    manifests = [yaml.safe_load(p.read_text()) for p in sorted(MANIFESTS.glob("*.yaml"))]
    pairs = {(m["architecture"], m["backbone"]["name"]) for m in manifests}
    for architecture in ("fcos", "retinanet"):
        assert len({name for arch, name in pairs if arch == architecture}) >= 2


def test_zoo_build_and_predict_draw_rotated_boxes(tmp_path):
    manifest = oriented_manifest_data("fcos", score_threshold=0.0, detections_per_image=3)
    (tmp_path / "oriented.yaml").write_text(yaml.safe_dump(manifest))
    built = zoo("build", str(tmp_path / "oriented.yaml"), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    checkpoint = tmp_path / "out" / "oriented-fcos-1.0.0.safetensors"
    assert checkpoint.is_file()

    image, _ = SyntheticRectangles(image_size=80).sample(torch.Generator().manual_seed(8))
    picture = tmp_path / "picture.png"
    Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(picture)
    drawn = tmp_path / "drawn.png"
    predicted = zoo("predict", str(checkpoint), str(picture), "--draw", str(drawn), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    lines = [line for line in predicted.stdout.splitlines() if "angle" in line]
    assert len(lines) == 3
    assert all("deg" in line and ("ship" in line or "plane" in line) for line in lines)
    assert Image.open(drawn).size == (80, 80)
    assert Image.open(drawn).tobytes() != Image.open(picture).convert("RGB").tobytes()

    as_json = zoo("predict", str(checkpoint), str(picture), "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    detections = json.loads(as_json.stdout)[0]["detections"]
    assert len(detections) == 3
    assert all(len(d["box"]) == 5 and len(d["polygon"]) == 4 for d in detections)


@pytest.mark.heavy
def test_zoo_builds_every_oriented_manifest(tmp_path):
    result = zoo("build", str(MANIFESTS), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    checkpoints = sorted((tmp_path / "out").glob("*.safetensors"))
    assert len(checkpoints) == len(list(MANIFESTS.glob("*.yaml")))
    for checkpoint in checkpoints:
        assert load_model(checkpoint).manifest.task == "oriented_detection"


# --- the training example ------------------------------------------------------------


def test_example_runs_end_to_end(tmp_path):
    result = run(
        sys.executable, str(EXAMPLE), "--iterations", "2", "--batch-size", "2", "--train-images", "4",
        "--test-images", "2", "--image-size", "64", "--out", str(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results["iterations"] == 2
    assert 0.0 <= results["mean_rotated_iou"] <= 1.0
    checkpoint = tmp_path / "oriented-fcos-synthetic-1.0.0.safetensors"
    assert load_model(checkpoint).manifest.architecture == "fcos"
    assert (tmp_path / "sample.png").is_file()


@pytest.mark.heavy
def test_example_reaches_target_iou(tmp_path):
    # One thread, as in the measurement ORIENTED.md reports; two threads on two busy cores ran several times slower.
    command = (sys.executable, str(EXAMPLE), "--threads", "1", "--require-iou", "0.7", "--out", str(tmp_path))
    result = run(*command, cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["mean_rotated_iou"] > 0.7
    assert results["recall"] > 0.8
