"""Run-length encoded masks and detections drawn onto images."""

from __future__ import annotations

import numpy as np
import pytest
from heads_detection.drawing import PALETTE, decode_mask, draw_detections, encode_mask
from PIL import Image


@pytest.mark.parametrize("fill", ["random", "empty", "full", "first_pixel"])
def test_mask_round_trip(fill: str) -> None:
    rng = np.random.default_rng(0)
    mask = {
        "random": rng.random((7, 5)) > 0.5,
        "empty": np.zeros((7, 5), dtype=bool),
        "full": np.ones((7, 5), dtype=bool),
        "first_pixel": np.eye(7, 5, dtype=bool),
    }[fill]
    rle = encode_mask(mask)
    assert rle["size"] == [7, 5]
    assert sum(rle["counts"]) == 35
    assert np.array_equal(decode_mask(rle), mask)


def test_counts_start_with_background_run() -> None:
    mask = np.array([[1, 0], [1, 1]], dtype=bool)
    # Column-major order visits (0,0), (1,0), (0,1), (1,1): 1, 1, 0, 1.
    assert encode_mask(mask)["counts"] == [0, 2, 1, 1]


def test_decode_rejects_wrong_total() -> None:
    with pytest.raises(ValueError, match="mask counts add up to 5 pixels, but size 2x2 has 4"):
        decode_mask({"size": [2, 2], "counts": [2, 3]})


def test_draw_box_and_mask() -> None:
    image = Image.new("RGB", (80, 60), (255, 255, 255))
    mask = np.zeros((60, 80), dtype=bool)
    mask[30:50, 40:70] = True
    detections = [
        {"class_id": 1, "class_name": "cat", "score": 0.9, "box": [10.0, 20.0, 30.0, 50.0]},
        {"class_id": 2, "class_name": "dog", "score": 0.5, "box": [40.0, 30.0, 70.0, 50.0], "mask": encode_mask(mask)},
    ]
    drawn = draw_detections(image, detections)

    assert drawn.size == image.size
    assert drawn.mode == "RGB"
    assert drawn.getpixel((10, 35)) == PALETTE[1]
    inside_mask = drawn.getpixel((55, 42))
    assert inside_mask != (255, 255, 255)
    assert inside_mask[0] < 255 or inside_mask[2] < 255
    assert drawn.getpixel((5, 5)) == (255, 255, 255)
    assert image.getpixel((10, 35)) == (255, 255, 255)
