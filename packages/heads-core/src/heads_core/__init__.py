"""Task heads, backbones, manifests and checkpoints of the model zoo.

Build a model from a manifest, save it, and load it back from the file alone::

    import heads_core

    manifest = heads_core.load_manifest("zoo-manifests/classification/resnet18-imagenette.yaml")
    result = heads_core.build_model(manifest)
    heads_core.save_model(result.model, manifest, "resnet18.safetensors", result.reinitialized, result.measured_shapes)
    loaded = heads_core.load_model("resnet18.safetensors")
"""

from __future__ import annotations

from ._api import (
    LoadedModel,
    build_model,
    checkpoint_filename,
    inspect_checkpoint,
    library_versions,
    load_model,
    prepare_image,
    save_model,
)
from ._backbones import FeatureBackbone, create_backbone, create_feature_backbone, replace_first_conv
from ._meta import meta_forward, parameters_on_meta
from ._reading import load_manifest, manifest_json_schema, read_manifest_data, validate_manifest
from ._tasks import TaskType, get_head_for_task
from ._weights import (
    adapt_input_conv,
    is_weight_file,
    key_mismatch_message,
    read_state_dict,
    strip_known_prefix,
    torchvision_cache_file,
)
from .errors import CheckpointError, ManifestError, MissingDependencyError, WeightsNotFoundError, ZooError
from .heads import AnomalyHead, ClassificationHead, RegressionHead
from .manifest import (
    AnomalyManifest,
    BackboneSpec,
    ClassificationManifest,
    ManifestBase,
    Preprocess,
    RegressionManifest,
    canonical_json,
    default_preprocess,
)
from .plugins import BuildResult, TaskPlugin, get_plugin, installed_plugins

__version__ = "0.1.0"

__all__ = [
    "AnomalyHead",
    "AnomalyManifest",
    "BackboneSpec",
    "BuildResult",
    "CheckpointError",
    "ClassificationHead",
    "ClassificationManifest",
    "FeatureBackbone",
    "LoadedModel",
    "ManifestBase",
    "ManifestError",
    "MissingDependencyError",
    "Preprocess",
    "RegressionHead",
    "RegressionManifest",
    "TaskPlugin",
    "TaskType",
    "WeightsNotFoundError",
    "ZooError",
    "adapt_input_conv",
    "build_model",
    "canonical_json",
    "checkpoint_filename",
    "create_backbone",
    "create_feature_backbone",
    "default_preprocess",
    "get_head_for_task",
    "get_plugin",
    "inspect_checkpoint",
    "installed_plugins",
    "is_weight_file",
    "key_mismatch_message",
    "library_versions",
    "load_manifest",
    "load_model",
    "manifest_json_schema",
    "meta_forward",
    "parameters_on_meta",
    "prepare_image",
    "read_manifest_data",
    "read_state_dict",
    "replace_first_conv",
    "save_model",
    "strip_known_prefix",
    "torchvision_cache_file",
    "validate_manifest",
]
