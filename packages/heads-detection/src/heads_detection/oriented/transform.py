"""Normalising, resizing and batching images for oriented detectors.

Every image is scaled by one factor on both axes, so a rotated rectangle
stays a rectangle with the same angle. torchvision's `GeneralizedRCNNTransform`
stretches images to `fixed_size` instead, which would turn rotated
rectangles into parallelograms; here the image is scaled to fit inside
`fixed_size` and padded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection.image_list import ImageList

__all__ = ["OrientedTransform", "scale_boxes"]


class OrientedTransform(nn.Module):
    """Normalise images with the model's statistics, resize them keeping the aspect ratio, pad and stack them.

    Args:
        min_size, max_size: without `fixed_size`, the shorter side becomes
            `min_size` unless the longer side would exceed `max_size`. The
            batch is padded at the bottom and right to a multiple of `size_divisible`.
        fixed_size: (height, width) of every batch; each image is scaled to fit inside and padded.
    """

    def __init__(
        self,
        min_size: int,
        max_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        fixed_size: tuple[int, int] | None = None,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        self.min_size = min_size
        self.max_size = max_size
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.fixed_size = fixed_size
        self.size_divisible = size_divisible

    def scale_for(self, height: int, width: int) -> float:
        """Return the factor that resizes an image of this size."""
        if self.fixed_size is not None:
            return min(self.fixed_size[0] / height, self.fixed_size[1] / width)
        return min(self.min_size / min(height, width), self.max_size / max(height, width))

    def forward(self, images: list[Tensor]) -> ImageList:
        resized = []
        for image in images:
            mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)[:, None, None]
            std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)[:, None, None]
            image = (image - mean) / std
            height, width = image.shape[-2:]
            scale = self.scale_for(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            if size != (height, width):
                image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
            resized.append(image)
        if self.fixed_size is not None:
            batch_height, batch_width = self.fixed_size
        else:
            batch_height = max(i.shape[-2] for i in resized)
            batch_width = max(i.shape[-1] for i in resized)
            batch_height = math.ceil(batch_height / self.size_divisible) * self.size_divisible
            batch_width = math.ceil(batch_width / self.size_divisible) * self.size_divisible
        batch = resized[0].new_zeros(len(resized), resized[0].shape[0], batch_height, batch_width)
        for index, image in enumerate(resized):
            batch[index, :, : image.shape[-2], : image.shape[-1]].copy_(image)
        return ImageList(batch, [(int(i.shape[-2]), int(i.shape[-1])) for i in resized])


def scale_boxes(boxes: Tensor, old_size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Map rotated boxes from an image of `old_size` (H, W) to the same image resized to `new_size`.

    Both sides of a resized image come from one scale factor, rounded to whole
    pixels, so the two axis ratios differ by less than one pixel over the side.
    Centres scale per axis, and sides by the geometric mean of the two ratios.
    """
    ratio_y = new_size[0] / old_size[0]
    ratio_x = new_size[1] / old_size[1]
    side = math.sqrt(ratio_x * ratio_y)
    return boxes * boxes.new_tensor([ratio_x, ratio_y, side, side, 1.0])
