from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from heads_core import build_model, validate_manifest


def seg_data(**overrides: Any) -> dict[str, Any]:
    """Return a small valid segmentation manifest (LRASPP on MobileNetV3-Small). Keyword arguments replace top-level fields."""
    data: dict[str, Any] = {
        "name": "tiny-seg",
        "version": "1.0.0",
        "task": "segmentation",
        "architecture": "lraspp",
        "backbone": {"source": "torchvision", "name": "mobilenet_v3_small"},
        "num_classes": 3,
        "class_names": ["background", "cat", "dog"],
        "preprocess": {"input_size": [64, 64], "resize": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    data.update(overrides)
    return data


def backbone(source: str, name: str, **options: Any) -> dict[str, Any]:
    return {"source": source, "name": name, **options}


# One small backbone per decoder, covering timm and both torchvision paths.
SMALL = {
    "fcn": backbone("timm", "resnet18", output_stride=16),
    "deeplabv3": backbone("torchvision", "mobilenet_v3_small"),
    "deeplabv3plus": backbone("timm", "resnet18"),
    "lraspp": backbone("torchvision", "mobilenet_v3_small"),
}


def build(**overrides: Any):
    """Validate and build a manifest from `seg_data`, returning (manifest, BuildResult)."""
    manifest = validate_manifest(seg_data(**overrides))
    return manifest, build_model(manifest)


def small(architecture: str, **overrides: Any):
    """Build `architecture` on its small backbone from `SMALL` unless `overrides` names another."""
    overrides.setdefault("backbone", SMALL[architecture])
    return build(architecture=architecture, **overrides)


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point TORCH_HOME at an empty folder and return its hub/checkpoints folder, created."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    folder = tmp_path / "torch-home" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def write_manifest(tmp_path: Path):
    def write(name: str = "manifest.yaml", **overrides: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(seg_data(**overrides), sort_keys=False))
        return path

    return write


def seeded_input(*shape: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator)
