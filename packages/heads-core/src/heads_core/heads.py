"""Standalone heads for image-level tasks.

Each head takes the backbone's final unpooled feature map of shape (N, C, H, W)
and global-average-pools it over H and W before one linear layer. The
submodules are `pool`, `flatten`, `dropout` and `fc` in that order, so a
pretrained classifier made of global average pooling and one linear layer maps
onto a head by copying its weight and bias into `fc`.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["AnomalyHead", "ClassificationHead", "RegressionHead"]


class _PooledLinearHead(nn.Module):
    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be at least 1, got {in_features}")
        if out_features < 1:
            raise ValueError(f"the head needs at least 1 output, got {out_features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects an (N, C, H, W) feature map, "
                f"got shape {tuple(x.shape)}"
            )
        x = self.pool(x)
        x = self.flatten(x)
        x = self.dropout(x)
        return self.fc(x)


class ClassificationHead(_PooledLinearHead):
    """Class logits of shape (N, num_classes); apply softmax for probabilities."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__(in_features, num_classes, dropout)


class AnomalyHead(_PooledLinearHead):
    """One anomaly logit per image, shape (N, 1); apply sigmoid for the probability."""

    def __init__(self, in_features: int, dropout: float = 0.2) -> None:
        super().__init__(in_features, 1, dropout)


class RegressionHead(_PooledLinearHead):
    """Raw regression values of shape (N, num_outputs), with no activation."""

    def __init__(self, in_features: int, num_outputs: int = 1, dropout: float = 0.2) -> None:
        super().__init__(in_features, num_outputs, dropout)


