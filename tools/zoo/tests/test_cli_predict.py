"""`zoo predict` as a user runs it: image modes and channels, --draw names and folders, references, mask sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SEGMENTATION = {
    "task": "segmentation",
    "architecture": "lraspp",
    "backbone": {"source": "torchvision", "name": "mobilenet_v3_small"},
    "preprocess": {"input_size": [64, 64], "resize": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}
FOUR_CHANNELS = {
    "backbone": {"source": "timm", "name": "test_resnet", "in_chans": 4},
    "preprocess": {"input_size": [32, 32], "mean": [0.5] * 4, "std": [0.25] * 4},
}
ONE_CHANNEL = {
    "backbone": {"source": "timm", "name": "test_resnet", "in_chans": 1},
    "preprocess": {"input_size": [32, 32], "mean": [0.5], "std": [0.25]},
}


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "zoo", *args], check=False, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def _photo(path: Path, width: int = 400, height: int = 300, seed: int = 0) -> Path:
    generator = np.random.default_rng(seed)
    Image.fromarray(generator.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(path)
    return path


def test_sixteen_bit_grey_one_channel(built_checkpoints: Callable[..., Path], tmp_path):
    ramp = tmp_path / "ramp.png"
    Image.fromarray(np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)).save(ramp)
    result = zoo("predict", str(built_checkpoints(**ONE_CHANNEL)), str(ramp), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_rgb_jpeg_four_channels_rejected(built_checkpoints: Callable[..., Path], tmp_path):
    photo = _photo(tmp_path / "photo.jpg", 80, 80)
    result = zoo("predict", str(built_checkpoints(**FOUR_CHANNELS)), str(photo), cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"{photo}: the image is RGB with 3 channels, but the model takes in_chans=4" in message
    assert "give a 4-channel image" in message
    assert result.stdout == ""


def test_rgba_into_four_channel_model_runs(built_checkpoints: Callable[..., Path], tmp_path):
    image = tmp_path / "rgbn.png"
    Image.new("RGBA", (80, 80), (255, 0, 0, 128)).save(image)
    result = zoo("predict", str(built_checkpoints(**FOUR_CHANNELS)), str(image), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_segmentation_mask_is_at_the_original_size(built_checkpoints: Callable[..., Path], tmp_path):
    checkpoint = built_checkpoints(**SEGMENTATION)
    photo = _photo(tmp_path / "photo.png")
    result = zoo("predict", str(checkpoint), str(photo), "--json", "--draw", str(tmp_path / "drawn.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [prediction] = json.loads(result.stdout)
    assert (prediction["mask"]["width"], prediction["mask"]["height"]) == (400, 300)
    assert Image.open(tmp_path / "drawn.png").size == (400, 300)
    text = zoo("predict", str(checkpoint), str(photo), cwd=tmp_path)
    assert text.stdout.splitlines()[1].strip() == "pixel shares of the 400x300 mask:"


def test_draw_distinct_names_and_folder(built_checkpoints: Callable[..., Path], tmp_path):
    checkpoint = built_checkpoints(**SEGMENTATION)
    (tmp_path / "other").mkdir()
    images = [
        _photo(tmp_path / "photo.jpg", seed=1),
        _photo(tmp_path / "photo.png", seed=2),
        _photo(tmp_path / "other" / "photo.png", seed=3),
        _photo(tmp_path / "street.png", 200, 100, seed=4),
    ]
    result = zoo("predict", str(checkpoint), *map(str, images), "--json", "--draw", "out/multi.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    drawn = [row["drawn"] for row in json.loads(result.stdout)]
    assert drawn == ["out/multi-photo-jpg.png", "out/multi-photo-png-1.png", "out/multi-photo-png-2.png", "out/multi-street.png"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == sorted(Path(name).name for name in drawn)
    assert Image.open(tmp_path / "out" / "multi-street.png").size == (200, 100)


def test_draw_help_explains_the_names(tmp_path):
    result = zoo("predict", "--help", cwd=tmp_path)
    assert "writes out/x-a-jpg.png and out/x-a-png.png" in " ".join(result.stdout.replace("│", " ").split())


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        ("drawn.xyz", "--draw drawn.xyz: Pillow cannot write '.xyz' files; end the name with .png or .jpg"),
        ("photo.png", "--draw photo.png would overwrite the input image photo.png; choose another name"),
    ],
)
def test_bad_draw_target_fails_before_predicting(built_checkpoints: Callable[..., Path], tmp_path, draw, expected):
    _photo(tmp_path / "photo.png")
    result = zoo("predict", str(built_checkpoints(**SEGMENTATION)), "photo.png", "--draw", draw, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in " ".join(result.stderr.split())
    assert result.stdout == ""


def test_draw_without_drawing_task_fails_early(built_checkpoints: Callable[..., Path], tmp_path):
    photo = _photo(tmp_path / "photo.png")
    result = zoo("predict", str(built_checkpoints()), str(photo), "--draw", "drawn.png", cwd=tmp_path)
    assert result.returncode == 2
    assert "task 'classification' has nothing to draw; drop --draw" in result.stderr
    assert result.stdout == ""


def test_registry_reference_points_to_zoo_pull(tmp_path):
    photo = _photo(tmp_path / "photo.png")
    reference = "oci://127.0.0.1:5055/x:0.1.0"
    result = zoo("predict", reference, str(photo), cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert f"error: {reference}: no such file; predict takes a local checkpoint file" in message
    assert f"`zoo pull {reference}`" in message


def test_detection_drawings_keep_sixteen_bit_levels():
    from heads_detection.drawing import draw_detections
    from heads_detection.oriented.drawing import draw_rotated_detections

    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    expected = np.round(ramp / 257).astype(np.uint8)
    for draw in (draw_detections, draw_rotated_detections):
        drawn = np.asarray(draw(Image.fromarray(ramp), []))
        assert np.array_equal(drawn[:, :, 0], expected), draw.__name__
