"""Synthetic images of rotated rectangles, for tests and small training runs.

Each image has a noisy background and a few filled rectangles that do not
overlap and lie fully inside the image. A rectangle's class sets its colour,
up to a small random shift, so a detector can tell the classes apart. The
edges are anti-aliased with 4x4 samples per pixel, so a rectangle's pixels match
its box to a fraction of a pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .geometry import box_frame_offsets, enclosing_boxes

__all__ = ["CLASS_COLOURS", "SyntheticRectangles"]

# RGB fill colour of class ids 1, 2, ...; ids past the end reuse the list.
CLASS_COLOURS = (
    (0.95, 0.55, 0.10),
    (0.10, 0.75, 0.95),
    (0.55, 0.95, 0.25),
    (0.90, 0.20, 0.70),
    (0.95, 0.95, 0.30),
    (0.40, 0.30, 0.95),
)

_SUBSAMPLES = 4
_MAX_PLACEMENT_TRIES = 50


@dataclass(frozen=True)
class SyntheticRectangles:
    """A generator of rotated-rectangle images with their targets.

    Attributes:
        image_size: height and width of every image, in pixels.
        num_classes: class ids run from 1 to num_classes.
        min_objects, max_objects: rectangles per image, both inclusive.
        min_long_side, max_long_side: range of the longer side, in pixels.
        min_aspect, max_aspect: range of the long side divided by the short side.
        noise: standard deviation of the background noise, in [0, 1] units.
    """

    image_size: int = 128
    num_classes: int = 2
    min_objects: int = 1
    max_objects: int = 4
    min_long_side: float = 20.0
    max_long_side: float = 60.0
    min_aspect: float = 1.5
    max_aspect: float = 3.5
    noise: float = 0.05

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects} and {self.max_objects}")
        if not 0 < self.min_long_side <= self.max_long_side < self.image_size:
            raise ValueError(
                f"need 0 < min_long_side <= max_long_side < image_size ({self.image_size}), "
                f"got {self.min_long_side} and {self.max_long_side}"
            )
        if not 1.0 <= self.min_aspect <= self.max_aspect:
            raise ValueError(f"need 1 <= min_aspect <= max_aspect, got {self.min_aspect} and {self.max_aspect}")

    def sample(self, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        """Draw one image (3, size, size) in [0, 1] and its target dict of "boxes" (K, 5) and "labels" (K,)."""
        size = self.image_size
        count = int(torch.randint(self.min_objects, self.max_objects + 1, (1,), generator=generator))
        base = torch.rand(3, 1, 1, generator=generator) * 0.4
        image = (base + self.noise * torch.randn(3, size, size, generator=generator)).clamp(0, 1)
        occupied = torch.zeros(size, size, dtype=torch.bool)
        boxes: list[Tensor] = []
        labels: list[int] = []
        for _ in range(count * _MAX_PLACEMENT_TRIES):
            if len(boxes) == count:
                break
            box = self._random_box(generator)
            extent = enclosing_boxes(box)
            if extent[:2].min() < 1 or extent[2:].max() > size - 1:
                continue
            region, coverage = self._coverage(box, extent)
            # A one-pixel gap keeps rectangles from touching.
            grown = torch.nn.functional.max_pool2d(occupied[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
            if (grown[region] & (coverage > 0)).any():
                continue
            label = int(torch.randint(1, self.num_classes + 1, (1,), generator=generator))
            colour = torch.tensor(CLASS_COLOURS[(label - 1) % len(CLASS_COLOURS)])
            colour = (colour + 0.1 * (torch.rand(3, generator=generator) - 0.5)).clamp(0, 1)
            patch = image[(slice(None), *region)]
            image[(slice(None), *region)] = patch * (1 - coverage) + colour[:, None, None] * coverage
            occupied[region] |= coverage > 0
            boxes.append(box)
            labels.append(label)
        box_tensor = torch.stack(boxes) if boxes else torch.zeros(0, 5)
        return image, {"boxes": box_tensor, "labels": torch.tensor(labels, dtype=torch.int64)}

    def dataset(self, count: int, seed: int) -> list[tuple[Tensor, dict[str, Tensor]]]:
        """Draw `count` images with a generator seeded by `seed`; the same seed gives the same images."""
        generator = torch.Generator().manual_seed(seed)
        return [self.sample(generator) for _ in range(count)]

    def _random_box(self, generator: torch.Generator) -> Tensor:
        u = torch.rand(5, generator=generator, dtype=torch.float64)
        long_side = self.min_long_side + u[0] * (self.max_long_side - self.min_long_side)
        aspect = self.min_aspect + u[1] * (self.max_aspect - self.min_aspect)
        angle = (u[2] - 0.5) * math.pi
        margin = long_side / 2 + 2
        cx = margin + u[3] * (self.image_size - 2 * margin)
        cy = margin + u[4] * (self.image_size - 2 * margin)
        return torch.stack((cx, cy, long_side, long_side / aspect, angle)).float()

    def _coverage(self, box: Tensor, extent: Tensor) -> tuple[tuple[slice, slice], Tensor]:
        """Return the pixel rows and columns around `box` and the fraction of each pixel the box covers."""
        top, left = int(extent[1].floor()), int(extent[0].floor())
        bottom, right = int(extent[3].ceil()) + 1, int(extent[2].ceil()) + 1
        step = 1.0 / _SUBSAMPLES
        offsets = torch.arange(_SUBSAMPLES) * step + step / 2
        rows = (torch.arange(top, bottom)[:, None] + offsets[None, :]).reshape(-1)
        columns = (torch.arange(left, right)[:, None] + offsets[None, :]).reshape(-1)
        ys, xs = torch.meshgrid(rows, columns, indexing="ij")
        points = torch.stack((xs, ys), dim=-1)
        u, v = box_frame_offsets(points, box.expand(points.shape[:-1] + (5,))).unbind(-1)
        inside = ((u.abs() <= box[2] / 2) & (v.abs() <= box[3] / 2)).float()
        coverage = inside.reshape(bottom - top, _SUBSAMPLES, right - left, _SUBSAMPLES).mean(dim=(1, 3))
        return (slice(top, bottom), slice(left, right)), coverage
