"""Small manifests, images and targets shared by the heads-detection tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from heads_core import validate_manifest

ALL_ARCHITECTURES = ("faster_rcnn", "retinanet", "fcos", "ssd", "ssdlite", "mask_rcnn")

# Small backbones per architecture, so that every architecture builds in seconds on two cores.
SMALL_BACKBONES = {
    "faster_rcnn": ("torchvision", "resnet18"),
    "retinanet": ("torchvision", "resnet18"),
    "fcos": ("torchvision", "resnet18"),
    "ssd": ("torchvision", "resnet18"),
    "ssdlite": ("torchvision", "mobilenet_v3_small"),
    "mask_rcnn": ("torchvision", "resnet18"),
}


def task_of(architecture: str) -> str:
    return "instance_segmentation" if architecture == "mask_rcnn" else "detection"


def manifest_data(architecture: str, source: str | None = None, name: str | None = None, **fields: Any) -> dict[str, Any]:
    """Return raw manifest data for a small, fast model of `architecture`."""
    default_source, default_name = SMALL_BACKBONES[architecture]
    backbone = {"source": source or default_source, "name": name or default_name}
    backbone.update(fields.pop("backbone", {}))
    data: dict[str, Any] = {
        "name": f"test-{architecture}",
        "version": "1.0.0",
        "task": task_of(architecture),
        "architecture": architecture,
        "backbone": backbone,
        "num_classes": 3,
        "class_names": ["cat", "dog", "bird"],
        "detections_per_image": 10,
    }
    if architecture in ("faster_rcnn", "mask_rcnn"):
        data["proposals_per_image"] = 64
    if architecture in ("ssd", "ssdlite"):
        if not (backbone["source"] == "torchvision" and backbone["name"].startswith(("vgg", "mobilenet_v3"))):
            data["fixed_size"] = [128, 128]
    elif backbone["source"] != "timm":
        data["min_size"], data["max_size"] = 96, 128
    data.update(fields)
    return data


def small_manifest(architecture: str, source: str | None = None, name: str | None = None, **fields: Any) -> Any:
    """Return a validated manifest for a small, fast model of `architecture`."""
    return validate_manifest(manifest_data(architecture, source, name, **fields))


def sample_images(in_chans: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Return two 0..1 images of different sizes."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(in_chans, 96, 112, generator=generator), torch.rand(in_chans, 80, 80, generator=generator)]


def sample_targets(images: list[torch.Tensor], with_masks: bool, empty_second: bool = False) -> list[dict[str, torch.Tensor]]:
    """Return one or two boxes per image with labels in 1..3, and image-sized masks when asked."""
    boxes = [torch.tensor([[8.0, 10.0, 60.0, 70.0], [40.0, 30.0, 100.0, 90.0]]), torch.tensor([[20.0, 15.0, 70.0, 60.0]])]
    labels = [torch.tensor([1, 3]), torch.tensor([2])]
    if empty_second:
        boxes[1], labels[1] = torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64)
    targets = []
    for image, image_boxes, image_labels in zip(images, boxes, labels):
        target = {"boxes": image_boxes, "labels": image_labels}
        if with_masks:
            masks = torch.zeros(len(image_boxes), *image.shape[-2:], dtype=torch.uint8)
            for index, (x1, y1, x2, y2) in enumerate(image_boxes.int().tolist()):
                masks[index, y1:y2, x1:x2] = 1
            target["masks"] = masks
        targets.append(target)
    return targets


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run each test on one thread, then restore the thread count.

    The inputs here are tiny, so a second thread saves little, while two
    threads contending with other processes on a two-core machine were
    measured up to seven times slower than one.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point TORCH_HOME at an empty folder and return its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints
