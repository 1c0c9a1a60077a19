"""Whole-model weights: torchvision segmentation weights from the torch hub cache, or a file."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from heads_core import WeightsNotFoundError, adapt_input_conv, read_state_dict
from heads_core._weights import (
    is_weight_file,
    key_mismatch_message,
    strip_known_prefix,
    torchvision_cache_file,
)
from torch import Tensor

from .manifest import SegmentationManifest, torchvision_builder
from .model import SegmentationModel

logger = logging.getLogger(__name__)


def resolve_file(weights: str, weights_dir: Path | None) -> str:
    """Return a weights file path, relative ones taken from `weights_dir`."""
    if weights_dir is None or Path(weights).is_absolute():
        return weights
    return str((weights_dir / weights).resolve())


def read_model_weights(manifest: SegmentationManifest, weights_dir: Path | None) -> tuple[dict[str, Tensor], str]:
    """Read the state dict that `manifest.weights` names and return it with the path it came from.

    Raises:
        WeightsNotFoundError: the file, or torchvision's file in the torch hub cache, is missing.
    """
    assert manifest.weights is not None
    if is_weight_file(manifest.weights):
        path = resolve_file(manifest.weights, weights_dir)
        return read_state_dict(path), path
    import torchvision.models as tv_models

    builder = torchvision_builder(manifest.architecture, manifest.backbone)
    assert builder is not None, "validation accepts weights names only for torchvision's pairs"
    enum = tv_models.get_model_weights(builder)
    member = enum.DEFAULT if manifest.weights == "DEFAULT" else enum[manifest.weights]
    path = torchvision_cache_file(member.url)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{enum.__name__}.{member.name}",
            [str(path)],
            "put the file there (TORCH_HOME sets the folder), or give the file path as weights",
        )
    return read_state_dict(path), str(path)


def load_model_weights(model: SegmentationModel, state: dict[str, Tensor], source: str) -> list[str]:
    """Copy a whole-model state dict into `model` and return the names of the tensors left freshly initialised.

    Rules, so that torchvision's weights and zoo checkpoints adapt to a new manifest:

    - tensors of the final classifier convolutions (main and auxiliary; both
      of LRASPP's) whose shape differs because `num_classes` differs keep
      their fresh initialisation;
    - auxiliary-classifier tensors are skipped when the model has no
      auxiliary classifier, and left fresh when the file has none;
    - a 3-channel input convolution is adapted to `in_chans`;
    - any other missing, unexpected or differently shaped tensor is an error.

    Raises:
        ValueError: the state dict does not fit the model; the message lists the keys.
    """
    expected = model.state_dict()
    state = strip_known_prefix(state, set(expected))
    if model.aux_classifier is None:
        skipped = sorted(key for key in state if key.startswith("aux_classifier."))
        if skipped:
            logger.info("skipping %d auxiliary-classifier tensors of %s: the model has none", len(skipped), source)
        state = {key: value for key, value in state.items() if not key.startswith("aux_classifier.")}
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    fresh_aux = {key for key in missing if key.startswith("aux_classifier.")}
    if unexpected or missing - fresh_aux:
        raise ValueError(
            f"weights {source} do not match the manifest's {model.architecture} model: "
            f"{key_mismatch_message(missing - fresh_aux, unexpected)}; give weights saved from the same "
            "architecture and backbone"
        )
    class_tensors = set(model.class_tensor_names())
    reinitialized = set(fresh_aux)
    loadable: dict[str, Tensor] = {}
    for name, tensor in state.items():
        target = expected[name]
        if tensor.shape == target.shape:
            loadable[name] = tensor
        elif name in class_tensors:
            reinitialized.add(name)
        elif _is_input_conv(tensor, target):
            loadable[name] = adapt_input_conv(tensor, target.shape[1])
        else:
            raise ValueError(
                f"weights {source}: tensor {name!r} has shape {tuple(tensor.shape)} but the manifest's model "
                f"needs {tuple(target.shape)}; only the final classifier convolutions may differ (num_classes)"
            )
    with torch.no_grad():
        model.load_state_dict(loadable, strict=False)
    return sorted(reinitialized)


def _is_input_conv(tensor: Tensor, target: Tensor) -> bool:
    return (
        tensor.dim() == 4
        and tensor.shape[1] == 3
        and tensor.shape[0] == target.shape[0]
        and tensor.shape[2:] == target.shape[2:]
    )
