"""Full-model pretrained weights: torchvision's COCO files, state-dict files and earlier zoo checkpoints.

Tensors load by name. Layers whose shape follows the class count keep their
fresh initialisation when the pretrained count differs, and are reported as
reinitialised. A first convolution with another input-channel count is
adapted with `heads_core.adapt_input_conv`. Any other difference is an error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from heads_core import WeightsNotFoundError, adapt_input_conv, read_state_dict
from torch import Tensor, nn

from .manifest import DetectorManifest, coco_weights_members, is_weight_file
from .torchvision_backbones import torchvision_cache_path

logger = logging.getLogger(__name__)

__all__ = ["assign_pretrained", "load_detector_weights", "resolve_weights_path"]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def resolve_weights_path(value: str, weights_dir: Path | None) -> str:
    """Return `value` as a path, relative paths taken from `weights_dir` (the manifest's folder)."""
    path = Path(value)
    if path.is_absolute() or weights_dir is None:
        return str(path)
    return str((weights_dir / path).resolve())


def _first_input_conv(model: nn.Module, in_chans: int) -> str | None:
    """Return the state-dict name of the first convolution that takes the input channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == in_chans:
            return f"{name}.weight"
    return None


def _strip_wrapper(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Remove a prefix such as `module.` when no key matches as it is and every key has it."""
    if set(state) & expected:
        return state
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def assign_pretrained(
    model: nn.Module, state: dict[str, Tensor], *, class_dependent: tuple[str, ...], in_chans: int, origin: str
) -> list[str]:
    """Load `state` into `model`; return the names of the tensors initialised anew.

    Names are loaded through `load_state_dict`, so torchvision's conversions
    of older layouts (RetinaNet and Mask R-CNN heads, RPN, FPN) apply.

    Raises:
        ValueError: a tensor is missing, unexpected, or has another shape outside the class-dependent layers.
    """
    own = model.state_dict()
    state = _strip_wrapper(dict(state), set(own))
    first_conv = _first_input_conv(model, in_chans)
    reinitialized: list[str] = []
    mismatched: list[str] = []
    for key, tensor in list(state.items()):
        target = own.get(key)
        if target is None or tuple(target.shape) == tuple(tensor.shape):
            continue
        if key.startswith(class_dependent):
            state[key] = target.detach().clone()
            reinitialized.append(key)
        elif key == first_conv and tensor.dim() == 4 and tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]:
            state[key] = adapt_input_conv(tensor, target.shape[1])
        else:
            mismatched.append(f"{key} has shape {tuple(tensor.shape)} there but {tuple(target.shape)} here")
    if mismatched:
        raise ValueError(
            f"weights {origin} do not fit the manifest's model: " + "; ".join(mismatched[:5])
            + (f" (and {len(mismatched) - 5} more)" if len(mismatched) > 5 else "")
            + "; use weights of the same architecture, backbone and backbone options"
        )
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise ValueError(f"weights {origin} do not fit the manifest's model: {error}") from None
    missing = sorted(k for k in result.missing_keys if not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in result.unexpected_keys if not k.endswith("num_batches_tracked"))
    if missing or unexpected:
        raise ValueError(
            f"weights {origin} do not fit the manifest's model: missing {len(missing)} tensors "
            f"({', '.join(missing[:8])}), unexpected {len(unexpected)} ({', '.join(unexpected[:8])}); use weights "
            "of the same architecture, backbone and backbone options"
        )
    logger.info("loaded weights %s; %d tensors initialised anew for the class count", origin, len(reinitialized))
    return sorted(reinitialized)


def _torchvision_state(manifest: DetectorManifest) -> tuple[dict[str, Tensor], str]:
    assert manifest.weights is not None
    member = manifest.weights.rpartition(".")[2]
    url = coco_weights_members(manifest.info)[member]
    path = torchvision_cache_path(url)
    if not path.is_file():
        raise WeightsNotFoundError(
            manifest.weights,
            [str(path)],
            "put torchvision's file there (TORCH_HOME sets the folder), or give its path as weights",
        )
    return read_state_dict(path), f"{manifest.weights} ({path})"


def _zoo_checkpoint_state(path: str, manifest: DetectorManifest) -> dict[str, Tensor] | None:
    """Return the tensors of a zoo checkpoint after checking it fits `manifest`, or None for other files."""
    from heads_core import load_model
    from heads_core.checkpoint import read_header

    if not path.endswith(".safetensors") or not Path(path).is_file() or not read_header(path).is_zoo_checkpoint:
        return None
    earlier = load_model(path)
    previous = earlier.manifest
    if previous.task not in ("detection", "instance_segmentation"):
        raise ValueError(
            f"weights {path} is a zoo checkpoint of task {previous.task!r}; full-model weights must come from a "
            f"detection or instance_segmentation checkpoint of architecture {manifest.architecture!r}"
        )
    assert isinstance(previous, DetectorManifest)
    ours, theirs = manifest.backbone, previous.backbone
    if previous.architecture != manifest.architecture or (theirs.source, theirs.name) != (ours.source, ours.name):
        raise ValueError(
            f"weights {path} hold {previous.architecture} on {theirs.source}:{theirs.name}, but this manifest "
            f"builds {manifest.architecture} on {ours.source}:{ours.name}; use a checkpoint of the same "
            "architecture and backbone"
        )
    if theirs.frozen_batchnorm_eps != ours.frozen_batchnorm_eps:
        raise ValueError(
            f"weights {path} were built with backbone.frozen_batchnorm_eps {theirs.frozen_batchnorm_eps}, but this "
            f"manifest has {ours.frozen_batchnorm_eps}; set backbone.frozen_batchnorm_eps: "
            f"{theirs.frozen_batchnorm_eps} so the loaded layers compute what they were trained to compute"
        )
    return dict(earlier.model.state_dict())


def load_detector_weights(model: nn.Module, manifest: DetectorManifest, weights_dir: Path | None) -> list[str]:
    """Load the manifest's full-model `weights` into `model`; return the tensors initialised anew."""
    assert manifest.weights is not None
    if not is_weight_file(manifest.weights):
        state, origin = _torchvision_state(manifest)
    else:
        path = resolve_weights_path(manifest.weights, weights_dir)
        zoo_state = _zoo_checkpoint_state(path, manifest)
        state = zoo_state if zoo_state is not None else read_state_dict(path)
        origin = path
    return assign_pretrained(
        model, state, class_dependent=manifest.info.class_dependent, in_chans=manifest.backbone.in_chans, origin=origin
    )
