"""Task plugins: how a package adds a task to the zoo.

A package registers one `TaskPlugin` instance per task in the
`heads_core.tasks` entry-point group, with the task name as the entry-point
name::

    [project.entry-points."heads_core.tasks"]
    detection = "heads_detection.plugin:DETECTION"

The plugin owns the task's manifest class, builds the model, and turns model
outputs into something a person can read. Entry points are loaded on first use.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._tasks import TASK_PACKAGES, TaskType

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor, nn

    from .manifest import ManifestBase

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "heads_core.tasks"

__all__ = ["ENTRY_POINT_GROUP", "BuildResult", "TaskPlugin", "get_plugin", "installed_plugins"]


@dataclass
class BuildResult:
    """A freshly built model and what the build found out about it.

    Attributes:
        model: the model, in eval mode.
        reinitialized: tensors initialised anew while adapting pretrained weights.
        measured_shapes: the record of the build's `meta_forward` calls, which
            `save_model` stores so that loading skips measuring again; None
            when the build could not record them.
    """

    model: nn.Module
    reinitialized: list[str] = field(default_factory=list)
    measured_shapes: list[Any] | None = None


class TaskPlugin:
    """One task of the zoo. Subclasses set `task` and `manifest_type` and implement `build`.

    Attributes:
        task: the manifest's `task` value.
        manifest_type: the pydantic model of the task's manifests.
    """

    task: str
    manifest_type: type[ManifestBase]

    def build(self, manifest: Any, *, weights_dir: Path | None, load_weights: bool) -> BuildResult:
        """Construct the model of `manifest`.

        Args:
            manifest: a validated instance of `manifest_type`.
            weights_dir: the folder that relative weight paths start from.
            load_weights: False when the caller assigns every tensor from a
                checkpoint afterwards, so no pretrained weights are read.
        """
        raise NotImplementedError

    def describe_outputs(self, manifest: Any) -> dict[str, Any]:
        """Describe what the model's outputs mean, for the checkpoint's `zoo.outputs`."""
        raise NotImplementedError

    def prepare_image(self, image: Image.Image, manifest: Any) -> Tensor:
        """Turn a PIL image into the (C, H, W) tensor the model expects."""
        from .preprocessing import preprocess_image

        return preprocess_image(image, manifest.preprocess, manifest.backbone.in_chans)

    def predict(self, model: nn.Module, images: list[Tensor], manifest: Any, top_k: int = 5) -> list[dict[str, Any]]:
        """Run `model` in eval mode on prepared images; one JSON-ready dict per image."""
        raise NotImplementedError

    def format_prediction(self, prediction: dict[str, Any], manifest: Any) -> list[str]:
        """Describe one prediction as lines of text for the terminal."""
        return [f"{key}: {value}" for key, value in prediction.items()]

    def draw(self, image: Image.Image, prediction: dict[str, Any], manifest: Any) -> Image.Image:
        """Return a copy of `image` with the prediction drawn on it."""
        raise ValueError(f"task {self.task!r} has nothing to draw; drop --draw")


@functools.lru_cache(maxsize=1)
def _registered_entry_points() -> dict[str, EntryPoint]:
    """Collect the entry points of the group by task name, without loading them.

    Raises:
        RuntimeError: two installed packages register the same task.
    """
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in found and found[entry.name].value != entry.value:
            raise RuntimeError(
                f"task {entry.name!r} is registered twice: by {_origin(found[entry.name])} and by {_origin(entry)}; "
                "uninstall one of the two packages"
            )
        found[entry.name] = entry
    return found


def _origin(entry: EntryPoint) -> str:
    return f"{entry.value} (from {entry.dist.name if entry.dist else 'an unknown distribution'})"


@functools.cache
def _load(task: str) -> TaskPlugin:
    entry = _registered_entry_points()[task]
    try:
        plugin = entry.load()
    except Exception as error:  # any import-time failure of a third-party plugin
        raise ImportError(
            f"the plugin of task {task!r}, {_origin(entry)}, failed to import: {type(error).__name__}: {error}; "
            "reinstall that package"
        ) from error
    if not isinstance(plugin, TaskPlugin):
        raise TypeError(f"entry point {_origin(entry)} must be a TaskPlugin instance, got {type(plugin).__name__}")
    return plugin


def installed_plugins() -> dict[str, TaskPlugin]:
    """Load every task plugin that imports cleanly; a broken one is logged and left out."""
    plugins: dict[str, TaskPlugin] = {}
    for task in _registered_entry_points():
        try:
            plugins[task] = _load(task)
        except (ImportError, TypeError) as error:
            logger.warning("%s", error)
    return plugins


def get_plugin(task: str) -> TaskPlugin:
    """Return the plugin of `task`, or raise naming the package that provides it."""
    if task in _registered_entry_points():
        try:
            return _load(task)
        except (ImportError, TypeError) as error:
            raise ValueError(str(error)) from error
    try:
        package = TASK_PACKAGES[TaskType(task)]
    except ValueError:
        choices = ", ".join(t.value for t in TaskType)
        raise ValueError(f"unknown task {task!r}; choose one of: {choices}") from None
    raise ValueError(f"task {task!r} needs the package {package}, which is not installed; run: pip install {package}")
