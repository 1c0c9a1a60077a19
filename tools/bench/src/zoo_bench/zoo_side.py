"""The zoo path of each comparison: heads_core's build_model, save_model and load_model."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .cases import ModelCase


class NotMeasurableError(Exception):
    """The zoo side of a case cannot run here, for example because its task's package is not installed."""


def validated_manifest(case: ModelCase) -> Any:
    """Import the case's package and validate its manifest.

    Raises:
        NotMeasurableError: the package is missing or the manifest is rejected.
    """
    try:
        importlib.import_module(case.package)
    except ImportError as error:
        raise NotMeasurableError(f"{case.package} is not importable ({error})") from None
    from heads_core import ZooError, validate_manifest

    try:
        return validate_manifest(case.manifest, f"<{case.key} benchmark manifest>")
    except ZooError as error:
        first_line = str(error).splitlines()[0]
        raise NotMeasurableError(f"{case.package} rejects the benchmark manifest: {first_line}") from None


def checkpoint_path(case: ModelCase, workdir: Path) -> Path:
    """Return where the case's checkpoint lives in the scratch folder."""
    return workdir / f"{case.key}.safetensors"


def build_and_save(manifest: Any, path: Path) -> Any:
    """Build the manifest's model and write its checkpoint to `path`; return the model."""
    from heads_core import build_model, save_model

    result = build_model(manifest)
    # Pass on everything the build returns that save_model accepts, as `zoo build` does.
    save_model(result.model, manifest, path, result.reinitialized, result.measured_shapes)
    return result.model


def ensure_checkpoint(case: ModelCase, workdir: Path) -> Path:
    """Write the case's checkpoint unless an earlier step of this run did."""
    path = checkpoint_path(case, workdir)
    if not path.exists():
        build_and_save(validated_manifest(case), path)
    return path
