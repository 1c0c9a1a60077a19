"""Rotated detections drawn onto images."""

from __future__ import annotations

from typing import Any

from heads_core.preprocessing import to_eight_bit
from PIL import Image, ImageDraw, ImageFont

from ..drawing import PALETTE

__all__ = ["draw_rotated_detections"]


def draw_rotated_detections(image: Image.Image, detections: list[dict[str, Any]]) -> Image.Image:
    """Return an RGB copy of `image` with each detection's rotated box and label drawn on it.

    Each detection needs "polygon" (four [x, y] corners), "class_id",
    "class_name" and "score", as the plugin's `predict` returns them. The
    first edge of each polygon runs along the box's width axis and is drawn
    twice as thick, so the box's orientation shows even for near-squares.
    Colours follow the class id as in heads-detection's axis-aligned drawing.
    """
    canvas = to_eight_bit(image).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(2, round(min(canvas.size) / 250))
    for detection in sorted(detections, key=lambda d: d["score"]):
        colour = PALETTE[detection["class_id"] % len(PALETTE)]
        corners = [(float(x), float(y)) for x, y in detection["polygon"]]
        draw.line([*corners, corners[0]], fill=colour, width=width, joint="curve")
        draw.line(corners[:2], fill=colour, width=2 * width)
        text = f"{detection['class_name']} {detection['score']:.2f}"
        x, y = min(corners, key=lambda corner: corner[1])
        left, top, right, bottom = draw.textbbox((x, y), text, font=font)
        label_top = max(0.0, y - (bottom - top) - 2)
        draw.rectangle((x, label_top, x + (right - left) + 4, label_top + (bottom - top) + 2), fill=colour)
        draw.text((x + 2, label_top), text, fill=(0, 0, 0), font=font)
    return canvas
