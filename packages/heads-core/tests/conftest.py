from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


def manifest_data(**overrides: Any) -> dict[str, Any]:
    """A small valid classification manifest; keyword arguments replace top-level fields."""
    data: dict[str, Any] = {
        "name": "tiny",
        "version": "1.0.0",
        "task": "classification",
        "backbone": {"source": "torchvision", "name": "resnet18"},
        "num_classes": 3,
        "class_names": ["cat", "dog", "bird"],
        "preprocess": {"input_size": [64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    data.update(overrides)
    return data


@pytest.fixture
def write_manifest(tmp_path: Path):
    def write(name: str = "manifest.yaml", **overrides: Any) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(manifest_data(**overrides), sort_keys=False))
        return path

    return write
