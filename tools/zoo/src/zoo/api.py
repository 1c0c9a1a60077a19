"""Load a model from a checkpoint file or a registry reference.

    import zoo

    loaded = zoo.load("oci://127.0.0.1:5000/resnet18-imagenette:1.0.0")
    loaded.model(batch)

torch, heads-core and the registry client are imported inside the functions,
so `import zoo` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from heads_core import LoadedModel

__all__ = ["load"]


def load(
    reference_or_path: str | Path,
    *,
    registry: str | None = None,
    insecure: bool = False,
    device: Any = None,
    cache: str | Path | None = None,
) -> LoadedModel:
    """Rebuild a model from a checkpoint file, or from a registry reference after a verified pull.

    A `Path`, or a string naming an existing file or ending in `.safetensors`,
    is loaded directly. Anything else is parsed as a reference (see
    `zoo.registry.reference`) and pulled into `cache`, by default
    `$XDG_CACHE_HOME/zoo/checkpoints`. The cache keeps one file per checkpoint
    content, and a cached file is hashed again before it is used.

    Args:
        reference_or_path: a checkpoint path or a registry reference with a tag or digest.
        registry: the default registry for bare names, as for `--registry`.
        insecure: allow plain HTTP to a registry that is not on a loopback host.
        device: where to move the model; None keeps it on the CPU.
        cache: the folder for pulled checkpoints.

    Raises:
        heads_core.CheckpointError: the checkpoint is damaged or not a zoo checkpoint.
        zoo.registry.RegistryError: the pull failed or its content did not verify.
    """
    from heads_core import load_model

    if isinstance(reference_or_path, Path):
        return load_model(reference_or_path, device=device)
    text = str(reference_or_path)
    if Path(text).is_file() or text.endswith(".safetensors"):
        return load_model(text, device=device)

    from .registry import pull_cached
    from .registry.reference import cache_home

    folder = Path(cache) if cache is not None else cache_home() / "zoo" / "checkpoints"
    result = pull_cached(text, folder, registry=registry, insecure=insecure)
    return load_model(result.path, device=device)
