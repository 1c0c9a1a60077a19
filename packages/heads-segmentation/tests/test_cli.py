"""The zoo command on segmentation checkpoints, run as a user runs it: in a subprocess, on a photograph."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .conftest import seg_data


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "zoo", *args], check=False, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A photograph, and a small LRASPP checkpoint built by `zoo build`."""
    import skimage.data

    folder = tmp_path_factory.mktemp("cli")
    photo = folder / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(photo)
    data = seg_data(
        name="lraspp-small",
        num_classes=4,
        class_names=["sky", "suit", "face", "flag"],
        preprocess={"input_size": [96, 96], "resize": 96, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    )
    (folder / "lraspp-small.yaml").write_text(yaml.safe_dump(data))
    result = zoo("build", "lraspp-small.yaml", "--out", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, photo, folder / "out" / "lraspp-small-1.0.0.safetensors"


def test_predict_draws_mask_on_photograph(built):
    folder, photo, checkpoint = built
    drawn_path = folder / "drawn.png"
    result = zoo("predict", str(checkpoint), str(photo), "--draw", str(drawn_path), cwd=folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(photo)
    # The mask is reported at the photograph's size, as boxes of detectors are.
    width, height = Image.open(photo).size
    assert lines[1].strip() == f"pixel shares of the {width}x{height} mask:"
    shares = [float(line.split("%")[0]) for line in lines[2:]]
    assert sum(shares) == pytest.approx(100.0, abs=0.01 * len(shares))
    original = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    drawn = np.asarray(Image.open(drawn_path)).astype(int)
    assert drawn.shape == original.shape
    # Away from the legend every pixel is half photograph, half class colour.
    assert np.abs(drawn[200:, 200:] - original[200:, 200:]).mean() > 10
