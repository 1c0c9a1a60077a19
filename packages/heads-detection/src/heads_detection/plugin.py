"""The `detection` and `instance_segmentation` task plugins registered with heads-core."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from heads_core.plugins import BuildResult, TaskPlugin

from .manifest import (
    DetectionManifest,
    DetectorManifest,
    InstanceSegmentationManifest,
    input_description,
    is_weight_file,
)

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor, nn

__all__ = ["DETECTION", "INSTANCE_SEGMENTATION", "DetectorPlugin"]


class DetectorPlugin(TaskPlugin):
    """Builds, describes and runs the detectors of one task.

    Models take a list of (in_chans, H, W) float images with values in 0..1
    and normalise and resize them internally.
    """

    def __init__(self, task: str, manifest_type: type[DetectorManifest]) -> None:
        self.task = task
        self.manifest_type = manifest_type

    def build(self, manifest: DetectorManifest, *, weights_dir: Path | None, load_weights: bool) -> BuildResult:
        from .builders import build_detector
        from .weights import load_detector_weights, resolve_weights_path

        backbone_weights = manifest.backbone.weights if load_weights else None
        if backbone_weights is not None and is_weight_file(backbone_weights):
            backbone_weights = resolve_weights_path(backbone_weights, weights_dir)
        model = build_detector(manifest, backbone_weights=backbone_weights)
        reinitialized: list[str] = []
        if load_weights and manifest.weights is not None:
            reinitialized = load_detector_weights(model, manifest, weights_dir)
        return BuildResult(model, reinitialized)

    def describe_outputs(self, manifest: DetectorManifest) -> dict[str, Any]:
        assert manifest.preprocess is not None
        names = manifest.class_names or [f"class_{i}" for i in range(1, manifest.num_classes + 1)]
        outputs: dict[str, Any] = {
            "kind": "instance_masks" if self.task == "instance_segmentation" else "detections",
            "architecture": manifest.architecture,
            "input": input_description(manifest),
            "eval": "list of dicts per image: boxes, labels, scores" + (", masks" if self.task == "instance_segmentation" else ""),
            "train": "dict of losses for images and targets with boxes and labels",
            "boxes": "(N, 4) float, (x1, y1, x2, y2) in input-image pixels",
            "labels": "(N,) int64 class ids; num_classes excludes background",
            "label_range": [1, manifest.num_classes],
            "background_label": 0,
            "scores": "(N,) float in 0..1, highest first",
            "score_threshold": manifest.score_threshold,
            "class_names": {str(i): name for i, name in enumerate(names, start=1)},
        }
        if isinstance(manifest, InstanceSegmentationManifest):
            outputs["masks"] = "(N, 1, H, W) float probabilities in input-image pixels"
            outputs["mask_threshold"] = manifest.mask_threshold
        return outputs

    def prepare_image(self, image: Image.Image, manifest: DetectorManifest) -> Tensor:
        from heads_core.preprocessing import image_to_tensor

        return image_to_tensor(image, manifest.backbone.in_chans)

    def predict(self, model: nn.Module, images: list[Tensor], manifest: DetectorManifest, top_k: int = 5) -> list[dict[str, Any]]:
        """Detect objects; `top_k` is unused because the manifest's score threshold picks detections."""
        import torch

        model.eval()
        with torch.inference_mode():
            outputs = model(images)
        return [self._interpret(output, image, manifest) for output, image in zip(outputs, images)]

    def _interpret(self, output: dict[str, Tensor], image: Tensor, manifest: DetectorManifest) -> dict[str, Any]:
        from .drawing import encode_mask

        names = manifest.class_names or [f"class_{i}" for i in range(1, manifest.num_classes + 1)]
        detections = []
        for index in range(output["boxes"].shape[0]):
            label = int(output["labels"][index])
            detection: dict[str, Any] = {
                "class_id": label,
                "class_name": names[label - 1],
                "score": round(float(output["scores"][index]), 6),
                "box": [round(float(v), 2) for v in output["boxes"][index]],
            }
            if "masks" in output and isinstance(manifest, InstanceSegmentationManifest):
                binary = (output["masks"][index, 0] >= manifest.mask_threshold).cpu().numpy()
                detection["mask"] = encode_mask(binary)
            detections.append(detection)
        return {"image_size": [int(image.shape[-2]), int(image.shape[-1])], "detections": detections}

    def format_prediction(self, prediction: dict[str, Any], manifest: DetectorManifest) -> list[str]:
        detections = prediction["detections"]
        if not detections:
            return [f"no detections with score above {manifest.score_threshold}"]
        lines = []
        for d in detections:
            x1, y1, x2, y2 = d["box"]
            line = f"{d['score']:7.2%}  {d['class_name']} (id {d['class_id']})  box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})"
            if "mask" in d:
                line += f"  mask {sum(d['mask']['counts'][1::2])} px"
            lines.append(line)
        return lines

    def draw(self, image: Image.Image, prediction: dict[str, Any], manifest: DetectorManifest) -> Image.Image:
        from .drawing import draw_detections

        return draw_detections(image, prediction["detections"])


DETECTION = DetectorPlugin("detection", DetectionManifest)
INSTANCE_SEGMENTATION = DetectorPlugin("instance_segmentation", InstanceSegmentationManifest)
