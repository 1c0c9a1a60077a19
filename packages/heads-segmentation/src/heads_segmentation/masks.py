"""Class masks: a JSON-ready PNG encoding, a colour per class, and overlays on images."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from heads_core.preprocessing import to_eight_bit
from PIL import Image, ImageDraw, ImageFont

__all__ = ["class_colors", "decode_mask", "encode_mask", "overlay_mask"]

MASK_ENCODING = "png_base64"
OVERLAY_ALPHA = 0.5
LEGEND_ROWS = 12


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode an (H, W) array of class ids as a base64 PNG: 8-bit below 256 classes, else 16-bit.

    Raises:
        ValueError: a class id is negative or above 65535.
    """
    if mask.ndim != 2:
        raise ValueError(f"a mask must have shape (H, W), got {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 65535):
        raise ValueError(f"class ids must lie in 0..65535 to fit a 16-bit PNG, got {mask.min()}..{mask.max()}")
    dtype = np.uint8 if mask.size == 0 or mask.max() < 256 else np.uint16
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(mask.astype(dtype))).save(buffer, format="PNG", optimize=False)
    return {
        "encoding": MASK_ENCODING,
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "data": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }


def decode_mask(encoded: dict[str, Any]) -> np.ndarray:
    """Decode a mask written by `encode_mask` into an (H, W) int64 array of class ids."""
    if encoded.get("encoding") != MASK_ENCODING:
        raise ValueError(f"mask encoding {encoded.get('encoding')!r} is not supported; expected {MASK_ENCODING!r}")
    with Image.open(io.BytesIO(base64.b64decode(encoded["data"]))) as image:
        mask = np.asarray(image).astype(np.int64)
    if mask.shape != (encoded["height"], encoded["width"]):
        raise ValueError(f"the mask data is {mask.shape[1]}x{mask.shape[0]} but the header gives {encoded['width']}x{encoded['height']}")
    return mask


def class_colors(num_classes: int) -> np.ndarray:
    """Return a (num_classes, 3) uint8 palette: the PASCAL VOC colour map.

    The bits of each class id are spread over the high bits of red, green
    and blue in turn, so neighbouring ids get clearly different colours.
    Class 0 is black.
    """
    ids = np.arange(num_classes, dtype=np.int64)
    colors = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colors[:, channel] |= ((ids >> (3 * bit + channel)) & 1) << (7 - bit)
    return colors.astype(np.uint8)


def overlay_mask(
    image: Image.Image,
    mask: np.ndarray,
    class_names: Sequence[str],
    shares: Sequence[tuple[int, float]] = (),
    alpha: float = OVERLAY_ALPHA,
) -> Image.Image:
    """Blend a colour per class over `image` and list the classes in a legend.

    The mask is resized to the image with nearest-neighbour sampling, so a
    mask predicted on a resized image lines up with the original.

    Args:
        shares: (class id, pixel share) pairs to list in the legend, largest
            first; at most `LEGEND_ROWS` are shown.
    """
    rgb = to_eight_bit(image).convert("RGB")
    resized = Image.fromarray(mask.astype(np.int32)).resize(rgb.size, Image.Resampling.NEAREST)
    ids = np.asarray(resized).astype(np.int64)
    palette = class_colors(max(len(class_names), int(ids.max()) + 1 if ids.size else 1))
    pixels = np.asarray(rgb).astype(np.float32)
    blended = (1 - alpha) * pixels + alpha * palette[ids].astype(np.float32)
    result = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    if shares:
        _draw_legend(result, palette, class_names, shares)
    return result


def _draw_legend(image: Image.Image, palette: np.ndarray, names: Sequence[str], shares: Sequence[tuple[int, float]]) -> None:
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    rows = list(shares)[:LEGEND_ROWS]
    labels = [f"{names[i] if i < len(names) else f'class_{i}'} {share:.1%}" for i, share in rows]
    row_height = 14
    width = 22 + max(int(draw.textlength(label, font=font)) for label in labels)
    draw.rectangle([0, 0, width + 4, row_height * len(rows) + 4], fill=(255, 255, 255))
    for row, ((class_id, _), label) in enumerate(zip(rows, labels)):
        top = 2 + row * row_height
        draw.rectangle([4, top + 1, 14, top + 11], fill=tuple(int(c) for c in palette[class_id]), outline=(0, 0, 0))
        draw.text((20, top), label, fill=(0, 0, 0), font=font)
