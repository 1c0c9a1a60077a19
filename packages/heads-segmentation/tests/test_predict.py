"""Preparing images, per-class pixel shares, mask encoding and drawing."""

import numpy as np
import pytest
import torch
from heads_segmentation import (
    SEGMENTATION,
    class_colors,
    decode_mask,
    encode_mask,
    overlay_mask,
)
from PIL import Image

from .conftest import small


@pytest.fixture(scope="module")
def lraspp():
    return small("lraspp")


def _photo(width: int, height: int) -> Image.Image:
    generator = np.random.default_rng(0)
    return Image.fromarray(generator.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def test_prepare_keeps_aspect_ratio(lraspp):
    manifest, _ = lraspp
    tensor = SEGMENTATION.prepare_image(_photo(200, 100), manifest)
    assert tensor.shape == (3, 64, 128)


def test_prepare_normalises(lraspp):
    manifest, _ = lraspp
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    tensor = SEGMENTATION.prepare_image(white, manifest)
    assert torch.allclose(tensor, torch.full((3, 64, 64), 2.0))


def test_prepare_grey_image_for_one_channel():
    manifest, _ = small(
        "lraspp",
        backbone={"source": "torchvision", "name": "mobilenet_v3_small", "in_chans": 1},
        preprocess={"input_size": [32, 32], "mean": [0.5], "std": [0.5]},
    )
    tensor = SEGMENTATION.prepare_image(_photo(96, 64), manifest)
    assert tensor.shape == (1, 32, 48)


def test_predict_shares_and_mask(lraspp):
    manifest, result = lraspp
    tensor = SEGMENTATION.prepare_image(_photo(90, 70), manifest)
    prediction = SEGMENTATION.predict(result.model, [tensor], manifest)[0]
    with torch.no_grad():
        expected = result.model(tensor.unsqueeze(0))["out"][0].argmax(dim=0).numpy()
    mask = decode_mask(prediction["mask"])
    assert mask.shape == tuple(tensor.shape[-2:])
    assert np.array_equal(mask, expected)
    shares = prediction["class_shares"]
    assert sum(row["share"] for row in shares) == pytest.approx(1.0)
    assert [row["share"] for row in shares] == sorted((row["share"] for row in shares), reverse=True)
    for row in shares:
        assert row["share"] == pytest.approx(float((expected == row["class_id"]).mean()))
        assert row["class_name"] == manifest.class_names[row["class_id"]]


def test_predict_images_of_different_sizes(lraspp):
    manifest, result = lraspp
    tensors = [SEGMENTATION.prepare_image(_photo(w, h), manifest) for w, h in ((64, 64), (150, 80))]
    predictions = SEGMENTATION.predict(result.model, tensors, manifest)
    assert [(p["mask"]["height"], p["mask"]["width"]) for p in predictions] == [(64, 64), (64, 120)]


def test_format_prediction_lists_shares(lraspp):
    manifest, _ = lraspp
    prediction = {
        "class_shares": [
            {"class_id": 2, "class_name": "dog", "share": 0.75},
            {"class_id": 0, "class_name": "background", "share": 0.25},
        ],
        "mask": {"encoding": "png_base64", "height": 4, "width": 8, "data": ""},
    }
    lines = SEGMENTATION.format_prediction(prediction, manifest)
    assert lines == ["pixel shares of the 8x4 mask:", " 75.00%  dog (id 2)", " 25.00%  background (id 0)"]


@pytest.mark.parametrize("top", [2, 255, 256, 65535])
def test_mask_encoding_roundtrip(top):
    mask = np.array([[0, 1, top], [top, 1, 0]])
    encoded = encode_mask(mask)
    assert encoded["encoding"] == "png_base64"
    assert (encoded["height"], encoded["width"]) == (2, 3)
    assert np.array_equal(decode_mask(encoded), mask)


def test_mask_encoding_rejects_large_ids():
    with pytest.raises(ValueError, match="class ids must lie in 0..65535"):
        encode_mask(np.array([[0, 65536]]))


def test_decode_rejects_unknown_encoding():
    with pytest.raises(ValueError, match="mask encoding 'rle' is not supported; expected 'png_base64'"):
        decode_mask({"encoding": "rle", "height": 1, "width": 1, "data": ""})


def test_palette_is_pascal_voc():
    colors = class_colors(256)
    assert colors[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert colors[15].tolist() == [192, 128, 128]
    assert len({tuple(color) for color in colors}) == 256


def test_overlay_blends_class_colours():
    image = Image.new("RGB", (40, 20), (200, 200, 200))
    mask = np.zeros((10, 20), dtype=np.int64)
    mask[:, 10:] = 1
    drawn = np.asarray(overlay_mask(image, mask, ["background", "road"]))
    assert drawn.shape == (20, 40, 3)
    assert drawn[15, 5].tolist() == [100, 100, 100]
    assert drawn[15, 35].tolist() == [164, 100, 100]


def test_draw_maps_mask_onto_original_image(lraspp):
    manifest, result = lraspp
    photo = _photo(150, 90)
    prediction = SEGMENTATION.predict(result.model, [SEGMENTATION.prepare_image(photo, manifest)], manifest)[0]
    drawn = SEGMENTATION.draw(photo, prediction, manifest)
    assert drawn.size == photo.size
    assert drawn.mode == "RGB"
    legend = np.asarray(drawn)[2:10, 2:4]
    assert (legend == 255).all(), "the legend's white background is drawn in the top-left corner"
    top_class = prediction["class_shares"][0]["class_id"]
    assert tuple(np.asarray(drawn)[3 + 2, 5 + 2]) == tuple(class_colors(3)[top_class]), "first legend swatch"
