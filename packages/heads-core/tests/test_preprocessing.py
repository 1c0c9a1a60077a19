"""How images of each Pillow mode become model input: value scaling and channel conversions."""

import numpy as np
import pytest
import torch
from heads_core.preprocessing import image_to_tensor, to_eight_bit
from PIL import Image


def _ramp(dtype: str) -> np.ndarray:
    """Return a 16x256 ramp over the full 16-bit range, 0 in the first pixel and 65535 in the last."""
    return np.linspace(0, 65535, 16 * 256).round().astype(dtype).reshape(16, 256)


@pytest.mark.parametrize("dtype", ["<u2", ">u2", "<i4"], ids=["I;16", "I;16B", "I"])
def test_sixteen_bit_scaled_by_full_range(dtype):
    ramp = _ramp(dtype)
    image = Image.fromarray(ramp)
    tensor = image_to_tensor(image, 1)
    assert tensor.shape == (1, 16, 256)
    assert torch.allclose(tensor[0], torch.from_numpy(ramp.astype(np.float32) / 65535))
    assert tensor.min() == 0
    assert tensor.max() == 1
    assert (tensor == 1).float().mean() < 0.001, "only the last pixel of the ramp is white"


def test_sixteen_bit_png_keeps_its_precision(tmp_path):
    path = tmp_path / "ramp.png"
    Image.fromarray(_ramp("<u2")).save(path)
    with Image.open(path) as image:
        tensor = image_to_tensor(image, 1)
    assert len(torch.unique(tensor)) == 16 * 256, "every 16-bit level stays distinct"


def test_sixteen_bit_replicated_for_rgb():
    tensor = image_to_tensor(Image.fromarray(_ramp("<u2")), 3)
    assert tensor.shape == (3, 16, 256)
    assert torch.equal(tensor[0], tensor[2])
    assert tensor[1, 0, 128].item() == pytest.approx(_ramp("<u2")[0, 128] / 65535)


def test_mode_i_above_sixteen_bits_rejected():
    image = Image.fromarray(np.array([[0, 70000]], dtype=np.int32))
    with pytest.raises(ValueError, match=r"mode I \(32-bit integers\) with values 0..70000.*save it as a 16-bit image"):
        image_to_tensor(image, 1)


def test_float_image_is_taken_as_it_is():
    values = np.array([[-0.5, 0.25], [1.0, 2.0]], dtype=np.float32)
    tensor = image_to_tensor(Image.fromarray(values), 1)
    assert torch.equal(tensor[0], torch.from_numpy(values))


def test_rgb_into_four_channels_is_rejected():
    with pytest.raises(ValueError) as caught:
        image_to_tensor(Image.new("RGB", (8, 8), "red"), 4)
    message = str(caught.value)
    assert "the image is RGB with 3 channels, but the model takes in_chans=4" in message
    assert "give a 4-channel image" in message


@pytest.mark.parametrize(("mode", "in_chans"), [("L", 4), ("RGB", 2), ("RGBA", 5), ("I;16", 4)])
def test_unconvertible_channels_rejected(mode, in_chans):
    with pytest.raises(ValueError, match=f"the image is {mode} with .* in_chans={in_chans}, and no standard conversion exists"):
        image_to_tensor(Image.new(mode, (4, 4)), in_chans)


def test_grey_replicated_for_rgb():
    tensor = image_to_tensor(Image.new("L", (4, 4), 51), 3)
    assert torch.allclose(tensor, torch.full((3, 4, 4), 0.2))


def test_rgb_becomes_luminance_for_one_channel():
    tensor = image_to_tensor(Image.new("RGB", (4, 4), (255, 0, 0)), 1)
    # Pillow's ITU-R 601-2 luma: 299/1000 of red, rounded to 8 bits.
    assert torch.allclose(tensor, torch.full((1, 4, 4), 76 / 255))


def test_rgba_drops_alpha_for_three_channels():
    tensor = image_to_tensor(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), 3)
    assert tensor[:, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_four_band_image_is_used_as_it_is():
    tensor = image_to_tensor(Image.new("RGBA", (4, 4), (255, 0, 0, 51)), 4)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([1.0, 0.0, 0.0, 0.2]))


def test_palette_with_transparency_counts_as_rgba():
    image = Image.new("P", (4, 4), 0)
    image.putpalette([255, 0, 0] * 256)
    image.info["transparency"] = 0
    tensor = image_to_tensor(image, 4)
    assert tensor[:, 0, 0].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_to_eight_bit_scales_sixteen_bits():
    ramp = _ramp("<u2")
    grey = to_eight_bit(Image.fromarray(ramp))
    assert grey.mode == "L"
    assert np.array_equal(np.asarray(grey), np.round(ramp / 257).astype(np.uint8))


def test_to_eight_bit_keeps_eight_bit_images():
    image = Image.new("RGBA", (4, 4), (1, 2, 3, 4))
    assert to_eight_bit(image) is image
