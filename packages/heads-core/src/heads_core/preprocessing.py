"""Image preprocessing from a manifest's `preprocess` section."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn import functional as F

if TYPE_CHECKING:
    from PIL import Image

    from .manifest import Preprocess

__all__ = ["image_to_tensor", "preprocess_image"]


def image_to_tensor(image: Image.Image, in_chans: int) -> Tensor:
    """Convert a PIL image to a float (C, H, W) tensor in [0, 1] with `in_chans` channels.

    Grey images are converted for 1 channel, RGB for 3 and RGBA-like images
    for 4; other counts need an image that already has them.
    """
    import numpy as np

    modes = {1: "L", 3: "RGB", 4: "RGBA"}
    if in_chans in modes and image.mode != modes[in_chans]:
        image = image.convert(modes[in_chans])
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] != in_chans:
        raise ValueError(f"the image has {array.shape[2]} channels but the model expects {in_chans}")
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


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
