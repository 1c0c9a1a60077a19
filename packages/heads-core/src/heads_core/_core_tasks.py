"""The three tasks heads-core serves itself: classification, anomaly detection, regression."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .manifest import AnomalyManifest, ClassificationManifest, ManifestBase, RegressionManifest
from .plugins import BuildResult, TaskPlugin


class BackboneWithHead(nn.Module):
    """A backbone returning an (N, C, H, W) map followed by a pooled linear head.

    Input: images of shape (N, in_chans, H, W), normalised as the manifest's
    `preprocess` section specifies. Output: the head's output, see each head.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, in_chans: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.in_chans = in_chans

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected images of shape (N, {self.in_chans}, H, W), got {tuple(x.shape)}; "
                f"the model was built for {self.in_chans} input channels (backbone.in_chans)"
            )
        return self.head(self.backbone(x))


def _resolve_weights(weights: str | None, weights_dir: Path | None) -> str | None:
    from ._weights import is_weight_file

    if weights is None or not is_weight_file(weights) or weights_dir is None:
        return weights
    return str((weights_dir / weights).resolve()) if not Path(weights).is_absolute() else weights


class PooledHeadPlugin(TaskPlugin):
    """Shared builder of the three tasks whose head pools the final map."""

    def head_size(self, manifest: Any) -> int:
        raise NotImplementedError

    def make_head(self, in_features: int, manifest: Any) -> nn.Module:
        raise NotImplementedError

    def build(self, manifest: Any, *, weights_dir: Path | None, load_weights: bool) -> BuildResult:
        from ._backbones import create_backbone

        spec = manifest.backbone
        weights = _resolve_weights(spec.weights, weights_dir) if load_weights else None
        trunk, channels, classifier = create_backbone(spec.source, spec.name, weights=weights, in_chans=spec.in_chans)
        head = self.make_head(channels, manifest)
        reinitialized: list[str] = []
        if weights is not None:
            if classifier is not None and tuple(classifier.weight.shape) == tuple(head.fc.weight.shape):
                head.fc.weight.data.copy_(classifier.weight)
                if classifier.bias is not None:
                    head.fc.bias.data.copy_(classifier.bias)
                else:  # a classifier without bias (MaxViT's) adds nothing
                    head.fc.bias.data.zero_()
            else:
                reinitialized = ["head.fc.bias", "head.fc.weight"]
        return BuildResult(BackboneWithHead(trunk, head, spec.in_chans), reinitialized)

    def predict(self, model: nn.Module, images: list[Tensor], manifest: Any, top_k: int = 5) -> list[dict[str, Any]]:
        import torch

        model.eval()
        with torch.inference_mode():
            outputs = model(torch.stack(images))
        return [self.interpret(row, manifest, top_k) for row in outputs]

    def interpret(self, output: Tensor, manifest: Any, top_k: int) -> dict[str, Any]:
        raise NotImplementedError


class ClassificationPlugin(PooledHeadPlugin):
    task = "classification"
    manifest_type = ClassificationManifest

    def make_head(self, in_features: int, manifest: ClassificationManifest) -> nn.Module:
        from .heads import ClassificationHead

        return ClassificationHead(in_features, manifest.num_classes, manifest.dropout)

    def describe_outputs(self, manifest: ClassificationManifest) -> dict[str, Any]:
        return {
            "kind": "class_logits",
            "shape": ["N", manifest.num_classes],
            "activation": "softmax",
            "class_names": manifest.class_names,
        }

    def interpret(self, output: Tensor, manifest: ClassificationManifest, top_k: int) -> dict[str, Any]:
        probabilities = output.softmax(dim=-1)
        k = min(top_k, probabilities.numel())
        values, indices = probabilities.topk(k)
        names = manifest.class_names or [f"class_{i}" for i in range(manifest.num_classes)]
        return {
            "top_k": [
                {"class_id": int(i), "class_name": names[int(i)], "probability": float(p)}
                for p, i in zip(values, indices)
            ]
        }

    def format_prediction(self, prediction: dict[str, Any], manifest: Any) -> list[str]:
        return [f"{row['probability']:7.2%}  {row['class_name']} (id {row['class_id']})" for row in prediction["top_k"]]


class AnomalyPlugin(PooledHeadPlugin):
    task = "anomaly_detection"
    manifest_type = AnomalyManifest

    def make_head(self, in_features: int, manifest: AnomalyManifest) -> nn.Module:
        from .heads import AnomalyHead

        return AnomalyHead(in_features, manifest.dropout)

    def describe_outputs(self, manifest: AnomalyManifest) -> dict[str, Any]:
        return {"kind": "anomaly_logit", "shape": ["N", 1], "activation": "sigmoid", "threshold": manifest.threshold}

    def interpret(self, output: Tensor, manifest: AnomalyManifest, top_k: int) -> dict[str, Any]:
        probability = float(output.sigmoid()[0])
        return {"anomaly_probability": probability, "is_anomaly": probability >= manifest.threshold}

    def format_prediction(self, prediction: dict[str, Any], manifest: Any) -> list[str]:
        verdict = "anomalous" if prediction["is_anomaly"] else "normal"
        return [f"anomaly probability {prediction['anomaly_probability']:.2%} ({verdict})"]


class RegressionPlugin(PooledHeadPlugin):
    task = "regression"
    manifest_type = RegressionManifest

    def make_head(self, in_features: int, manifest: RegressionManifest) -> nn.Module:
        from .heads import RegressionHead

        return RegressionHead(in_features, manifest.num_outputs, manifest.dropout)

    def describe_outputs(self, manifest: RegressionManifest) -> dict[str, Any]:
        return {"kind": "raw_values", "shape": ["N", manifest.num_outputs], "activation": None, "output_names": manifest.output_names}

    def interpret(self, output: Tensor, manifest: RegressionManifest, top_k: int) -> dict[str, Any]:
        names = manifest.output_names or [f"output_{i}" for i in range(manifest.num_outputs)]
        return {"values": {name: float(v) for name, v in zip(names, output)}}

    def format_prediction(self, prediction: dict[str, Any], manifest: Any) -> list[str]:
        return [f"{name}: {value:.6g}" for name, value in prediction["values"].items()]


CLASSIFICATION = ClassificationPlugin()
ANOMALY_DETECTION = AnomalyPlugin()
REGRESSION = RegressionPlugin()

__all__ = ["ANOMALY_DETECTION", "CLASSIFICATION", "REGRESSION", "BackboneWithHead", "ManifestBase"]
