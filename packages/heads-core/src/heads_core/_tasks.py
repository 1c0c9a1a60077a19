"""The task names of the zoo and the rule that picks a head for a task."""

from __future__ import annotations

from enum import Enum


class TaskType(str, Enum):
    """Every task a manifest can name; the value is the manifest's `task` string."""

    CLASSIFICATION = "classification"
    ANOMALY_DETECTION = "anomaly_detection"
    REGRESSION = "regression"
    DETECTION = "detection"
    ORIENTED_DETECTION = "oriented_detection"
    INSTANCE_SEGMENTATION = "instance_segmentation"
    SEGMENTATION = "segmentation"


# The package that registers each task's manifest and builder through the
# `heads_core.tasks` entry-point group.
TASK_PACKAGES: dict[TaskType, str] = {
    TaskType.CLASSIFICATION: "heads-core",
    TaskType.ANOMALY_DETECTION: "heads-core",
    TaskType.REGRESSION: "heads-core",
    TaskType.DETECTION: "heads-detection",
    TaskType.ORIENTED_DETECTION: "heads-detection",
    TaskType.INSTANCE_SEGMENTATION: "heads-detection",
    TaskType.SEGMENTATION: "heads-segmentation",
}

_STANDALONE_HEADS: dict[TaskType, str] = {
    TaskType.CLASSIFICATION: "classification",
    TaskType.ANOMALY_DETECTION: "anomaly",
    TaskType.REGRESSION: "regression",
}


def get_head_for_task(task: TaskType | str) -> str:
    """Return the name of the standalone head that serves `task`.

    Detection and segmentation heads are part of their full architectures
    (Faster R-CNN, DeepLabV3, ...), so there is no standalone head to pick.

    Raises:
        ValueError: `task` is not a task name, or its head is embedded in an
            architecture.
    """
    try:
        task = TaskType(task)
    except ValueError:
        choices = ", ".join(t.value for t in TaskType)
        raise ValueError(f"unknown task {task!r}; choose one of: {choices}") from None
    head = _STANDALONE_HEADS.get(task)
    if head is None:
        raise ValueError(
            f"task {task.value!r} has no standalone head: its head is part of the "
            f"architecture built by {TASK_PACKAGES[task]}; standalone heads exist for "
            + ", ".join(t.value for t in _STANDALONE_HEADS)
        )
    return head
