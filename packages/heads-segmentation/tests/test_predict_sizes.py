"""Masks returned at the original image's size when `predict` gets `image_sizes`."""

import numpy as np
import pytest
import torch
from heads_segmentation import SEGMENTATION, decode_mask, overlay_mask
from PIL import Image

from .conftest import small


@pytest.fixture(scope="module")
def lraspp():
    return small("lraspp")


def _photo(width: int, height: int) -> Image.Image:
    generator = np.random.default_rng(1)
    return Image.fromarray(generator.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_mask_and_shares_are_at_the_original_size(lraspp):
    manifest, result = lraspp
    photo = _photo(400, 300)
    tensor = SEGMENTATION.prepare_image(photo, manifest)
    assert tuple(tensor.shape[-2:]) != (300, 400), "the model runs on a resized image"
    prediction = SEGMENTATION.predict(result.model, [tensor], manifest, image_sizes=[(300, 400)])[0]
    with torch.no_grad():
        small_mask = result.model(tensor.unsqueeze(0))["out"][0].argmax(dim=0).numpy()
    expected = np.asarray(Image.fromarray(small_mask.astype(np.int32)).resize(photo.size, Image.Resampling.NEAREST))
    mask = decode_mask(prediction["mask"])
    assert (prediction["mask"]["height"], prediction["mask"]["width"]) == (300, 400)
    assert np.array_equal(mask, expected)
    for row in prediction["class_shares"]:
        assert row["share"] == pytest.approx(float((expected == row["class_id"]).mean()))
    assert SEGMENTATION.format_prediction(prediction, manifest)[0] == "pixel shares of the 400x300 mask:"


def test_image_sizes_must_match_the_images(lraspp):
    manifest, result = lraspp
    tensor = SEGMENTATION.prepare_image(_photo(64, 64), manifest)
    with pytest.raises(ValueError, match="got 2 image sizes for 1 images; give one"):
        SEGMENTATION.predict(result.model, [tensor], manifest, image_sizes=[(64, 64), (64, 64)])


def test_overlay_keeps_sixteen_bit_levels():
    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    drawn = np.asarray(overlay_mask(Image.fromarray(ramp), np.zeros((64, 64), dtype=np.int64), ["background"], alpha=0.0))
    assert (drawn == 255).mean() < 0.01, "Pillow's own conversion would clip 99% of the ramp to white"
    assert np.array_equal(drawn[:, :, 0], np.round(ramp / 257).astype(np.uint8))
