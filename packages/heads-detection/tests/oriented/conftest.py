"""Random rotated boxes and small oriented-detection manifests shared by the oriented tests."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch


def random_boxes(count: int, seed: int, *, min_side: float = 1.0, max_side: float = 40.0, spread: float = 50.0) -> torch.Tensor:
    """Return `count` float64 rotated boxes with random centres, sides and angles in [-pi/2, pi/2)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.rand(count, 2, generator=generator, dtype=torch.float64) * spread
    sides = min_side + torch.rand(count, 2, generator=generator, dtype=torch.float64) * (max_side - min_side)
    angles = (torch.rand(count, 1, generator=generator, dtype=torch.float64) - 0.5) * math.pi
    return torch.cat((centres, sides, angles), dim=1)


def oriented_manifest_data(architecture: str = "fcos", **fields: Any) -> dict[str, Any]:
    """Return raw manifest data for a small, fast oriented detector on ResNet-18."""
    data: dict[str, Any] = {
        "name": f"oriented-{architecture}",
        "version": "1.0.0",
        "task": "oriented_detection",
        "architecture": architecture,
        "backbone": {"source": "torchvision", "name": "resnet18"},
        "num_classes": 2,
        "class_names": ["ship", "plane"],
        "fpn_channels": 64,
        "min_size": 64,
        "max_size": 96,
        "detections_per_image": 20,
    }
    if architecture == "fcos":
        data["head_convs"] = 1
    data.update(fields)
    return data


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    """Keep each test on at most two threads, the CPU budget of the test suite."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
