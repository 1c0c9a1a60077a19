"""Fixtures for the registry tests: small checkpoints and an environment free of the user's registry settings."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# A timm test network keeps each checkpoint near 1.5 MB, so a build takes about a second.
TINY_MANIFEST: dict[str, Any] = {
    "name": "tiny",
    "version": "1.0.0",
    "description": "A tiny classifier for registry tests.",
    "task": "classification",
    "backbone": {"source": "timm", "name": "test_resnet"},
    "num_classes": 3,
    "class_names": ["cat", "dog", "bird"],
    "preprocess": {"input_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}


@pytest.fixture(autouse=True)
def registry_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the default registry, the cache and the Docker configuration at empty temporary folders."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    for name in ("ZOO_REGISTRY", "ZOO_REGISTRY_USERNAME", "ZOO_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def built_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a checkpoint once per distinct set of manifest fields; return its path."""
    import heads_core

    folder = tmp_path_factory.mktemp("checkpoints")
    built: dict[str, Path] = {}

    def build(**overrides: Any) -> Path:
        key = repr(sorted(overrides.items()))
        if key not in built:
            manifest = heads_core.validate_manifest({**TINY_MANIFEST, **overrides}, "<registry test manifest>")
            result = heads_core.build_model(manifest)
            target = folder / str(len(built)) / heads_core.checkpoint_filename(manifest)
            heads_core.save_model(result.model, manifest, target, result.reinitialized)
            built[key] = target
        return built[key]

    return build


@pytest.fixture
def checkpoint(built_checkpoints: Callable[..., Path], tmp_path: Path) -> Callable[..., Path]:
    """Return a private copy of a built checkpoint, in a new folder each call; keyword arguments override manifest fields."""
    copies = 0

    def copy(**overrides: Any) -> Path:
        nonlocal copies
        source = built_checkpoints(**overrides)
        target = tmp_path / "checkpoints" / str(copies) / source.name
        copies += 1
        target.parent.mkdir(parents=True)
        shutil.copyfile(source, target)
        return target

    return copy
