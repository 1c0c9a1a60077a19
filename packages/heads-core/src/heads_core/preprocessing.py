"""Image preprocessing from a manifest's `preprocess` section."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .manifest import Preprocess

__all__ = ["image_to_tensor", "preprocess_image", "to_eight_bit"]

# Pillow's single-band integer modes of more than 8 bits, all divided by
# SIXTEEN_BIT_MAX. Mode "I" stores 32-bit signed integers, but Pillow also uses
# it for 16-bit PNG and TIFF data after some conversions, so it is read as
# 16-bit data.
INTEGER_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
SIXTEEN_BIT_MAX = 65535
FLOAT_MODE = "F"


def image_to_tensor(image: Image.Image, in_chans: int) -> Tensor:
    """Convert a PIL image to a float (C, H, W) tensor with `in_chans` channels.

    Values are scaled to [0, 1]: 8-bit modes are divided by 255, 16-bit modes
    ("I;16" and its byte orders) by 65535, and mode "I" by 65535 as well, so
    its values must lie in 0..65535. Mode "F" is taken as it is, so its values
    should already lie in [0, 1].

    A 1-channel model gets the image's luminance and a 3-channel model gets
    RGB, which replicates a grey image and drops alpha, as torchvision and timm
    users expect. Other models need an image with exactly `in_chans` bands,
    which are used as they are. A palette image counts as RGB, or as RGBA when
    it has transparency.

    Raises:
        ValueError: the image's channels cannot be converted to `in_chans`, or
            a mode "I" image has values outside 0..65535.
    """
    import numpy as np

    original_mode = image.mode
    if image.mode in INTEGER_MODES or image.mode == FLOAT_MODE:
        array = _high_depth_array(image)
        if in_chans == 3:
            array = np.repeat(array, 3, axis=2)
    else:
        if in_chans in (1, 3):
            image = image.convert("L" if in_chans == 1 else "RGB")
        elif image.mode in ("P", "PA"):
            image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
        array = np.asarray(image, dtype=np.uint8).astype(np.float32) / 255
        if array.ndim == 2:
            array = array[:, :, None]
    if array.shape[2] != in_chans:
        described = original_mode if original_mode == image.mode else f"{original_mode} (read as {image.mode})"
        raise ValueError(_channel_mismatch(described, array.shape[2], in_chans))
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def to_eight_bit(image: Image.Image) -> Image.Image:
    """Scale a 16-bit, 32-bit integer or float image to an 8-bit grey image for drawing, by the rule of `image_to_tensor`.

    Pillow's own conversion to "L" or "RGB" clips such images at 255 instead,
    which turns most of a 16-bit image white. Other images are returned as
    they are.
    """
    import numpy as np
    from PIL import Image

    if image.mode not in INTEGER_MODES and image.mode != FLOAT_MODE:
        return image
    unit = _high_depth_array(image)[:, :, 0]
    return Image.fromarray(np.clip(unit * 255 + 0.5, 0, 255).astype(np.uint8))


def _high_depth_array(image: Image.Image) -> np.ndarray:
    """Return a single-band image of more than 8 bits as an (H, W, 1) float32 array in [0, 1], or as it is for mode "F"."""
    import numpy as np

    array = np.asarray(image)
    if image.mode == FLOAT_MODE:
        return array.astype(np.float32)[:, :, None]
    if image.mode == "I" and array.size and (array.min() < 0 or array.max() > SIXTEEN_BIT_MAX):
        raise ValueError(
            f"the image is mode I (32-bit integers) with values {array.min()}..{array.max()}, but zoo reads mode I as "
            f"16-bit data in 0..{SIXTEEN_BIT_MAX}; save it as a 16-bit image, or as mode F with values scaled to [0, 1]"
        )
    return (array.astype(np.float32) / SIXTEEN_BIT_MAX)[:, :, None]


def _channel_mismatch(mode: str, channels: int, in_chans: int) -> str:
    """Describe why an image with `channels` channels cannot feed a model with `in_chans` and what to give instead."""
    found = f"the image is {mode} with {channels} channel{'s' if channels != 1 else ''}, but the model takes in_chans={in_chans}"
    if in_chans == 4:
        advice = "give a 4-channel image, such as an RGBA PNG or TIFF whose alpha band holds the fourth channel (for example near-infrared)"
    elif in_chans == 2:
        advice = "give a 2-channel image, such as an LA PNG whose alpha band holds the second channel"
    else:
        advice = f"Pillow images have at most 4 channels, so run the model from Python on a ({in_chans}, H, W) tensor"
    return f"{found}, and no standard conversion exists; {advice}"


def preprocess_image(image: Image.Image, preprocess: Preprocess, in_chans: int) -> Tensor:
    """Resize the shorter side, center-crop to `input_size` and normalise."""
    tensor = image_to_tensor(image, in_chans).unsqueeze(0)
    height, width = preprocess.input_size
    resize = preprocess.resize or round(max(height, width) / 0.875)
    scale = resize / min(tensor.shape[-2:])
    new_size = (max(height, round(tensor.shape[-2] * scale)), max(width, round(tensor.shape[-1] * scale)))
    mode = preprocess.interpolation
    kwargs = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
    tensor = F.interpolate(tensor, size=new_size, mode=mode, **kwargs)
    top = (new_size[0] - height) // 2
    left = (new_size[1] - width) // 2
    tensor = tensor[:, :, top : top + height, left : left + width]
    mean = torch.tensor(preprocess.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocess.std).view(1, -1, 1, 1)
    return ((tensor - mean) / std)[0]
