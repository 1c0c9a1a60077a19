"""Masks as run-length encodings, and detections drawn onto images."""

from __future__ import annotations

from typing import Any

import numpy as np
from heads_core.preprocessing import to_eight_bit
from PIL import Image, ImageDraw, ImageFont

__all__ = ["decode_mask", "draw_detections", "encode_mask"]

# Distinct colours for class ids; id k gets PALETTE[k % len(PALETTE)].
PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)  # fmt: skip
MASK_ALPHA = 110


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode a boolean (H, W) mask as uncompressed COCO run-length encoding.

    `counts` alternates runs of 0 and 1 over the pixels in column-major
    order, starting with a run of 0 (possibly empty); `size` is [H, W].
    """
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    boundaries = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(boundaries).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode `encode_mask`'s output back into a boolean (H, W) mask."""
    height, width = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if int(counts.sum()) != height * width:
        raise ValueError(
            f"mask counts add up to {int(counts.sum())} pixels, but size {height}x{width} has {height * width}"
        )
    values = np.arange(len(counts)) % 2 == 1
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def _label_text(detection: dict[str, Any]) -> str:
    return f"{detection['class_name']} {detection['score']:.2f}"


def draw_detections(image: Image.Image, detections: list[dict[str, Any]]) -> Image.Image:
    """Return an RGB copy of `image` with each detection's mask, box and label drawn on it."""
    canvas = to_eight_bit(image).convert("RGBA")
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    for detection in detections:
        if "mask" in detection:
            color = PALETTE[detection["class_id"] % len(PALETTE)]
            mask = Image.fromarray(decode_mask(detection["mask"]).astype(np.uint8) * MASK_ALPHA, mode="L")
            overlay.paste((*color, 255), mask=mask)
    canvas = Image.alpha_composite(canvas, overlay).convert("RGB")

    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(2, round(min(canvas.size) / 250))
    for detection in detections:
        color = PALETTE[detection["class_id"] % len(PALETTE)]
        x1, y1, x2, y2 = detection["box"]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = _label_text(detection)
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        label_top = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, label_top, x1 + (right - left) + 4, label_top + (bottom - top) + 2), fill=color)
        draw.text((x1 + 2, label_top), text, fill=(0, 0, 0), font=font)
    return canvas
