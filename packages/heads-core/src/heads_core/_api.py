"""Build a model from a manifest, save it as a checkpoint, load it back."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._deferred import deferred_initialisation
from ._meta import parameters_on_meta, recording_shapes, replaying_shapes
from ._reading import load_manifest, validate_manifest
from ._weights import key_mismatch_message, strip_known_prefix
from .checkpoint import FORMAT_VERSION, CheckpointHeader, read_header, read_tensors, write_checkpoint
from .errors import CheckpointError, ManifestError
from .manifest import ManifestBase, canonical_json
from .plugins import BuildResult, get_plugin

logger = logging.getLogger(__name__)

_VERSIONED = ("torch", "torchvision", "timm", "heads-core", "heads-detection", "heads-segmentation")


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with the manifest it was built from."""

    model: nn.Module
    manifest: Any
    header: CheckpointHeader


@functools.cache
def library_versions() -> dict[str, str]:
    """Return the installed versions of torch, torchvision, timm and the heads packages, as checkpoints record them."""
    found = {}
    for package in _VERSIONED:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def checkpoint_filename(manifest: ManifestBase) -> str:
    """Return the file name `<name>-<version>.safetensors` of a manifest's checkpoint."""
    return f"{manifest.name}-{manifest.version}.safetensors"


def build_model(
    manifest: ManifestBase | Mapping[str, Any] | str | Path, *, weights_dir: str | Path | None = None
) -> BuildResult:
    """Build the model a manifest describes, seeded from the manifest.

    Args:
        manifest: a validated manifest, a mapping of manifest fields (as
            `validate_manifest` takes), or the path of a manifest file.
        weights_dir: the folder relative weight paths start from; defaults to
            the manifest file's folder, or the working folder.
    """
    if isinstance(manifest, (str, Path)):
        weights_dir = weights_dir or Path(manifest).parent
        manifest = load_manifest(manifest)
    elif isinstance(manifest, Mapping):
        manifest = validate_manifest(manifest)
    plugin = get_plugin(manifest.task)
    with torch.random.fork_rng(devices=[]), recording_shapes() as record, deferred_initialisation():
        torch.manual_seed(manifest.seed)
        result = plugin.build(manifest, weights_dir=Path(weights_dir) if weights_dir else None, load_weights=True)
    result.model.eval()
    result.measured_shapes = record.calls if record.complete else None
    return result


def prepare_image(image: Any, manifest: ManifestBase) -> Tensor:
    """Turn an image into the (C, H, W) tensor a model of `manifest` expects, by the manifest's preprocessing.

    Args:
        image: a PIL image, or the path of an image file.
        manifest: the model's manifest, such as `load_model(...).manifest`.

    Classification, anomaly detection and regression resize, center-crop and
    normalise; detectors and segmentation models normalise and resize as
    their task needs. Stack the tensors of several images into a batch for
    the models that take one tensor.
    """
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as opened:
            opened.load()
            return get_plugin(manifest.task).prepare_image(opened, manifest)
    return get_plugin(manifest.task).prepare_image(image, manifest)


def checkpoint_metadata(
    manifest: ManifestBase, reinitialized: list[str], measured_shapes: list[Any] | None = None
) -> dict[str, str]:
    """Return the `__metadata__` strings of a checkpoint for `manifest`."""
    manifest_json = canonical_json(manifest)
    outputs = get_plugin(manifest.task).describe_outputs(manifest)

    def compact(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    metadata = {
        "zoo.format": FORMAT_VERSION,
        "zoo.manifest": manifest_json,
        "zoo.manifest_sha256": hashlib.sha256(manifest_json.encode()).hexdigest(),
        "zoo.task": manifest.task,
        "zoo.outputs": compact(outputs),
        "zoo.versions": compact(library_versions()),
        "zoo.reinitialized": compact(sorted(reinitialized)),
    }
    if measured_shapes is not None:
        metadata["zoo.measured_shapes"] = compact(measured_shapes)
    return metadata


def save_model(
    model: nn.Module,
    manifest: ManifestBase,
    path: str | Path,
    reinitialized: list[str] | None = None,
    measured_shapes: list[Any] | None = None,
) -> str:
    """Write `model` and `manifest` as a zoo checkpoint; return the file's sha256.

    Args:
        model: the built model.
        manifest: the manifest it was built from.
        path: the file to write, replaced atomically.
        reinitialized: `BuildResult.reinitialized`.
        measured_shapes: `BuildResult.measured_shapes`; loading a checkpoint
            that has them skips the shape measurement of the build, as long
            as the same library versions are installed.
    """
    metadata = checkpoint_metadata(manifest, reinitialized or [], measured_shapes)
    return write_checkpoint(path, model.state_dict(), metadata)


def _checked_manifest(header: CheckpointHeader, check_backbone_names: bool = True) -> Any:
    # The weights of a checkpoint are in the file, so a pretrained tag that the
    # installed library no longer has does not stop reading it.
    path = header.path
    if not header.is_zoo_checkpoint:
        raise CheckpointError(
            path,
            "a safetensors file without zoo metadata (no zoo.format); to use it as pretrained weights, "
            "name it in a manifest's backbone.weights and run `zoo build`",
        )
    if header.metadata["zoo.format"] != FORMAT_VERSION:
        raise CheckpointError(
            path, f"checkpoint format {header.metadata['zoo.format']!r} is not supported; this heads-core reads format {FORMAT_VERSION}"
        )
    manifest_json = header.metadata.get("zoo.manifest")
    if manifest_json is None:
        raise CheckpointError(path, "zoo.manifest is missing from the metadata")
    if hashlib.sha256(manifest_json.encode()).hexdigest() != header.metadata.get("zoo.manifest_sha256"):
        raise CheckpointError(path, "zoo.manifest does not match zoo.manifest_sha256; the metadata was edited or damaged")
    try:
        data = json.loads(manifest_json)
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"zoo.manifest is not valid JSON ({error})") from None
    try:
        return validate_manifest(
            data, f"{path} (embedded manifest)", check_backbone_names=check_backbone_names, check_weights_tags=False
        )
    except ManifestError as error:
        missing_package = [p.message for p in error.problems if p.location == "task" and "not installed" in p.message]
        if missing_package:  # the file is fine; this environment lacks the task's package
            raise CheckpointError(path, f"a {data.get('task')} checkpoint, but {missing_package[0]}") from None
        raise CheckpointError(path, f"the embedded manifest is invalid:\n{error}") from None


def inspect_checkpoint(path: str | Path) -> tuple[CheckpointHeader, Any]:
    """Read a checkpoint's header and validated manifest without reading its tensors.

    The backbone's name is not looked up in timm or torchvision (it was when
    the checkpoint was built); `load_model` checks it.
    """
    header = read_header(path)
    return header, _checked_manifest(header, check_backbone_names=False)


def expand_aliases(header: CheckpointHeader, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Add the names listed in `zoo.aliases` back, sharing their target's data."""
    aliases = header.json_field("zoo.aliases", {})
    for alias, target in aliases.items():
        if target not in tensors:
            raise CheckpointError(header.path, f"alias {alias!r} points to missing tensor {target!r}")
        tensors[alias] = tensors[target]
    return tensors


def assign_state(model: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """Assign every tensor of `state` to `model`, strictly, or change nothing.

    Raises:
        CheckpointError: keys, shapes or dtypes differ from the model's.
    """
    expected = model.state_dict(keep_vars=True)
    state = strip_known_prefix(state, set(expected))
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        raise CheckpointError(path, f"the tensors do not match the model: {key_mismatch_message(missing, unexpected)}")
    for name, tensor in sorted(state.items()):
        target = expected[name]
        if tuple(tensor.shape) != tuple(target.shape) or tensor.dtype != target.dtype:
            raise CheckpointError(
                path,
                f"tensor {name!r} has shape {tuple(tensor.shape)} and dtype {tensor.dtype}, but the manifest's "
                f"model needs shape {tuple(target.shape)} and dtype {target.dtype}",
            )
    tied = _tied_parameter_groups(model)
    model.load_state_dict(state, strict=True, assign=True)
    _retie(model, tied)


def _tied_parameter_groups(model: nn.Module) -> list[list[str]]:
    """Names that refer to one shared parameter object, in groups of two or more."""
    groups: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _retie(model: nn.Module, groups: list[list[str]]) -> None:
    """Make every name of a group point to the first name's parameter again.

    Assigning a state dict gives each name its own parameter object, which
    would untie weights that the model shares (tied embeddings, for example).
    """
    for first, *others in groups:
        shared = model.get_parameter(first)
        for name in others:
            owner_name, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(owner_name) if owner_name else model, attribute, shared)


def load_model(path: str | Path, *, device: str | torch.device | None = None) -> LoadedModel:
    """Rebuild a model from a zoo checkpoint alone, offline, in eval mode.

    The model is constructed with its parameters on the meta device (on the
    CPU, running only the fills it reads, where the constructor needs
    parameter values), then the memory-mapped tensors of the file are assigned without
    a copy. Buffers that the modules derive at construction and do not save
    are computed as usual.

    Raises:
        CheckpointError: the file is damaged, not a zoo checkpoint, or its
            tensors do not match its manifest.
    """
    header = read_header(path)
    manifest = _checked_manifest(header)
    plugin = get_plugin(manifest.task)
    model = _construct_for_loading(plugin, manifest, header)
    tensors = expand_aliases(header, read_tensors(header))
    assign_state(model, tensors, path)
    _materialize_derived_buffers(model, lambda: plugin.build(manifest, weights_dir=None, load_weights=False).model)
    leftovers = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if leftovers:
        raise CheckpointError(path, f"tensors without data after loading: {', '.join(sorted(leftovers)[:10])}")
    if device is not None:
        model.to(device)
    model.eval()
    return LoadedModel(model, manifest, header)


def _construct_for_loading(plugin: Any, manifest: Any, header: CheckpointHeader) -> nn.Module:
    """Construct the manifest's model for the checkpoint's tensors to be assigned to.

    Parameters are created on the meta device. Some constructors compute with
    their parameters' values, such as timm's hybrid patch embeddings, which
    run their backbone once, or buffers derived on the parameters' device
    (timm's SwinV2-CR). Those fail on meta parameters and are constructed on
    the CPU instead, skipping every fill that the constructor does not read.
    """
    try:
        with parameters_on_meta(), _stored_shapes(header):
            return plugin.build(manifest, weights_dir=None, load_weights=False).model
    except (RuntimeError, NotImplementedError) as error:
        logger.info("constructing on the meta device failed (%s); constructing on the CPU instead", error)
    with deferred_initialisation(discard=True), _stored_shapes(header):
        return plugin.build(manifest, weights_dir=None, load_weights=False).model


def _stored_shapes(header: CheckpointHeader) -> contextlib.AbstractContextManager[None]:
    """Replay the checkpoint's measured shapes when they were measured with the libraries installed now."""
    metadata = header.metadata
    if "zoo.measured_shapes" not in metadata:
        return contextlib.nullcontext()
    try:
        same_versions = json.loads(metadata.get("zoo.versions", "null")) == library_versions()
        calls = json.loads(metadata["zoo.measured_shapes"])
    except json.JSONDecodeError:
        same_versions = False
    if not same_versions:
        return contextlib.nullcontext()
    return replaying_shapes(calls)


def _meta_buffer_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if any(b is not None and b.device.type == "meta" for b in m.buffers(recurse=False))]


def _materialize_derived_buffers(model: nn.Module, build_real: Any) -> None:
    """Compute non-persistent buffers that came out on the meta device.

    Some modules derive buffers from a parameter's device at construction
    (timm's Swin attention mask), so they are meta after construction with
    meta parameters. Each such module's own buffer initialiser is called now
    that the parameters are real; when a module has none, the model is built
    once more on the CPU and the missing buffers are copied from it.
    """
    for module in _meta_buffer_modules(model):
        for method in ("init_non_persistent_buffers", "_init_buffers"):
            if callable(getattr(module, method, None)):
                getattr(module, method)()
                break
    if not _meta_buffer_modules(model):
        return
    logger.info("computing derived buffers with a full CPU construction")
    reference = dict(build_real().named_buffers())
    for name, buffer in list(model.named_buffers()):
        if buffer.device.type == "meta":
            owner_name, _, attribute = name.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            owner._buffers[attribute] = reference[name]
