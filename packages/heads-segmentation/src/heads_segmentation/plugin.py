"""The `segmentation` task plugin, registered in the `heads_core.tasks` entry-point group."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from heads_core import BuildResult, TaskPlugin
from heads_core._weights import is_weight_file
from heads_core.preprocessing import image_to_tensor
from torch import Tensor, nn
from torch.nn import functional as F

from ._backbones import build_levels
from ._weights import load_model_weights, read_model_weights, resolve_file
from .manifest import SegmentationManifest
from .masks import decode_mask, encode_mask, overlay_mask
from .model import choose_roles, make_model

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["SEGMENTATION", "SegmentationPlugin", "build_segmentation_model"]


def build_segmentation_model(
    manifest: SegmentationManifest, *, weights_dir: Path | None = None, load_weights: bool = True
) -> BuildResult:
    """Construct the model of a validated segmentation manifest.

    With `load_weights` False no weight file is read and the structure is the
    same, so `heads_core.load_model` can assign a checkpoint's tensors.
    """
    spec = manifest.backbone
    assert spec.output_stride is not None, "validation fills backbone.output_stride"
    backbone_weights = None
    if load_weights and spec.weights is not None:
        backbone_weights = resolve_file(spec.weights, weights_dir) if is_weight_file(spec.weights) else spec.weights
    levels = build_levels(spec.source, spec.name, spec.output_stride, weights=backbone_weights, in_chans=spec.in_chans)
    roles = choose_roles(manifest.architecture, levels.kind, levels.strides, manifest.aux_classifier)
    model = make_model(
        manifest.architecture,
        levels.select(roles),
        {role: levels.channels[index] for role, index in roles.items()},
        num_classes=manifest.num_classes,
        output_stride=spec.output_stride,
        in_chans=spec.in_chans,
        size_divisor=levels.size_divisor,
    )
    reinitialized: list[str] = []
    if load_weights and manifest.weights is not None:
        state, source = read_model_weights(manifest, weights_dir)
        reinitialized = load_model_weights(model, state, source)
    elif backbone_weights is not None:
        # Only the backbone is pretrained: every decoder tensor is new.
        reinitialized = sorted(k for k in model.state_dict() if k.startswith(("classifier.", "aux_classifier.")))
    return BuildResult(model, reinitialized)


class SegmentationPlugin(TaskPlugin):
    """Semantic segmentation with FCN, DeepLabV3, DeepLabV3+ or LRASPP."""

    task = "segmentation"
    manifest_type = SegmentationManifest

    def build(self, manifest: Any, *, weights_dir: Path | None, load_weights: bool) -> BuildResult:
        return build_segmentation_model(manifest, weights_dir=weights_dir, load_weights=load_weights)

    def describe_outputs(self, manifest: SegmentationManifest) -> dict[str, Any]:
        shape = ["N", manifest.num_classes, "H", "W"]
        keys = {"out": shape, **({"aux": shape} if manifest.aux_classifier else {})}
        return {
            "kind": "segmentation_logits",
            "format": "dict",
            "keys": keys,
            "activation": "softmax over dim 1",
            "mask": "argmax over dim 1; H and W are the input's",
            "architecture": manifest.architecture,
            "output_stride": manifest.backbone.output_stride,
            "class_names": manifest.class_names,
        }

    def prepare_image(self, image: Image.Image, manifest: SegmentationManifest) -> Tensor:
        """Resize the shorter side to `preprocess.resize` (default: the smaller input side) and normalise.

        Unlike classification there is no crop: the aspect ratio is kept and
        the whole image is segmented, so the mask maps back onto the image by
        scaling alone.
        """
        preprocess = manifest.preprocess
        assert preprocess is not None
        tensor = image_to_tensor(image, manifest.backbone.in_chans).unsqueeze(0)
        side = preprocess.resize or min(preprocess.input_size)
        scale = side / min(tensor.shape[-2:])
        size = (max(1, round(tensor.shape[-2] * scale)), max(1, round(tensor.shape[-1] * scale)))
        if size != tuple(tensor.shape[-2:]):
            mode = preprocess.interpolation
            kwargs = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
            tensor = F.interpolate(tensor, size=size, mode=mode, **kwargs)
        mean = torch.tensor(preprocess.mean).view(1, -1, 1, 1)
        std = torch.tensor(preprocess.std).view(1, -1, 1, 1)
        return ((tensor - mean) / std)[0]

    def predict(
        self,
        model: nn.Module,
        images: list[Tensor],
        manifest: SegmentationManifest,
        top_k: int = 5,
        *,
        image_sizes: list[tuple[int, int]] | None = None,
    ) -> list[dict[str, Any]]:
        """Segment each image and return its mask (PNG, base64) with the share of pixels of each class present.

        Images may differ in size, so each runs alone. `top_k` does not apply:
        every class with at least one pixel is listed, largest share first.

        Args:
            image_sizes: the (height, width) of each original image. When
                given, each mask is resized to it with nearest-neighbour
                sampling before the shares are counted, so the mask lines up
                with the image as detection boxes do. None keeps the masks at
                the size of the prepared tensors.
        """
        if image_sizes is not None and len(image_sizes) != len(images):
            raise ValueError(f"got {len(image_sizes)} image sizes for {len(images)} images; give one (height, width) per image")
        model.eval()
        predictions = []
        with torch.inference_mode():
            for index, image in enumerate(images):
                mask = model(image.unsqueeze(0))["out"][0].argmax(dim=0)
                if image_sizes is not None:
                    mask = _resize_class_ids(mask, image_sizes[index])
                predictions.append(self._interpret(mask, manifest))
        return predictions

    def _interpret(self, mask: Tensor, manifest: SegmentationManifest) -> dict[str, Any]:
        counts = torch.bincount(mask.flatten(), minlength=manifest.num_classes)
        total = int(mask.numel())
        names = self._names(manifest)
        present = [(int(i), int(counts[i])) for i in torch.nonzero(counts).flatten()]
        present.sort(key=lambda item: (-item[1], item[0]))
        return {
            "class_shares": [
                {"class_id": class_id, "class_name": names[class_id], "share": count / total}
                for class_id, count in present
            ],
            "mask": encode_mask(mask.cpu().numpy()),
        }

    @staticmethod
    def _names(manifest: SegmentationManifest) -> list[str]:
        return manifest.class_names or [f"class_{i}" for i in range(manifest.num_classes)]

    def format_prediction(self, prediction: dict[str, Any], manifest: Any) -> list[str]:
        mask = prediction["mask"]
        lines = [f"pixel shares of the {mask['width']}x{mask['height']} mask:"]
        lines += [
            f"{row['share']:7.2%}  {row['class_name']} (id {row['class_id']})" for row in prediction["class_shares"]
        ]
        return lines

    def draw(self, image: Image.Image, prediction: dict[str, Any], manifest: SegmentationManifest) -> Image.Image:
        """Return `image` with the mask blended in a colour per class and a legend of the classes present."""
        mask = decode_mask(prediction["mask"])
        shares = [(row["class_id"], row["share"]) for row in prediction["class_shares"]]
        return overlay_mask(image, mask, self._names(manifest), shares)


def _resize_class_ids(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize an (H, W) mask of class ids to `size` by nearest-neighbour sampling of pixel centres.

    This samples the same pixels as Pillow's NEAREST filter and torch's
    "nearest-exact" mode, without converting the ids to floats.
    """
    height, width = size
    if (height, width) == tuple(mask.shape):
        return mask
    rows = ((torch.arange(height) + 0.5) * (mask.shape[0] / height)).long().clamp_(max=mask.shape[0] - 1)
    columns = ((torch.arange(width) + 0.5) * (mask.shape[1] / width)).long().clamp_(max=mask.shape[1] - 1)
    return mask[rows.to(mask.device)][:, columns.to(mask.device)]


SEGMENTATION = SegmentationPlugin()
