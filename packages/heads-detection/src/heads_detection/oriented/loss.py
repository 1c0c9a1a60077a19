"""The box loss of oriented detection: Kullback-Leibler divergence between box Gaussians.

Each rotated box becomes a 2-D Gaussian with mean at the box centre and
covariance R diag(w^2 / 4, h^2 / 4) R^T, where R turns by the box's angle.
(w, h, a), (w, h, a + pi) and (h, w, a + pi/2) give the same covariance, so
the loss cannot tell these descriptions of one rectangle apart and has no
discontinuity at the ends of the angle range. A square's covariance does not
depend on its angle at all, so the angle gets a zero gradient there instead of
an undefined one.

The loss follows Yang et al., "Learning High-Precision Bounding Box for Rotated
Object Detection via Kullback-Leibler Divergence" (NeurIPS 2021): with D the
divergence of the prediction from the target, loss = 1 - 1 / (tau + log(1 + D)).
It is 0 for identical boxes when tau = 1 and approaches 1 for distant boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["angle_loss", "boxes_to_gaussians", "gaussian_kl_divergence", "kld_box_loss"]

# Sides are clamped to this many pixels before squaring, so degenerate
# predictions give a large but finite loss.
MIN_SIDE = 1e-3


def boxes_to_gaussians(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Return the means (..., 2) and covariances (..., 2, 2) of rotated boxes (..., 5)."""
    if boxes.shape[-1:] != (5,):
        raise ValueError(f"boxes must have shape (..., 5) holding (cx, cy, w, h, angle), got {tuple(boxes.shape)}")
    centre = boxes[..., :2]
    half_w = boxes[..., 2].clamp(min=MIN_SIDE) / 2
    half_h = boxes[..., 3].clamp(min=MIN_SIDE) / 2
    cos, sin = torch.cos(boxes[..., 4]), torch.sin(boxes[..., 4])
    var_w, var_h = half_w * half_w, half_h * half_h
    xx = var_w * cos * cos + var_h * sin * sin
    yy = var_w * sin * sin + var_h * cos * cos
    xy = (var_w - var_h) * cos * sin
    covariance = torch.stack((torch.stack((xx, xy), dim=-1), torch.stack((xy, yy), dim=-1)), dim=-2)
    return centre, covariance


def gaussian_kl_divergence(
    mean_p: Tensor, cov_p: Tensor, mean_t: Tensor, cov_t: Tensor
) -> Tensor:
    """Return KL(N_p || N_t) of 2-D Gaussians, element by element.

    The closed form is 1/2 [tr(S_t^-1 S_p) + d^T S_t^-1 d - 2 + log(det S_t / det S_p)]
    with d = mean_p - mean_t. The 2x2 inverse is written out, which keeps
    the gradient defined for every positive-definite covariance.
    """
    a, b = cov_t[..., 0, 0], cov_t[..., 0, 1]
    c, d = cov_t[..., 1, 0], cov_t[..., 1, 1]
    det_t = a * d - b * c
    inv_t = torch.stack((torch.stack((d, -b), dim=-1), torch.stack((-c, a), dim=-1)), dim=-2) / det_t[..., None, None]
    det_p = cov_p[..., 0, 0] * cov_p[..., 1, 1] - cov_p[..., 0, 1] * cov_p[..., 1, 0]
    diff = (mean_p - mean_t).unsqueeze(-1)
    mahalanobis = (diff.transpose(-1, -2) @ inv_t @ diff)[..., 0, 0]
    trace = (inv_t * cov_p.transpose(-1, -2)).sum(dim=(-1, -2))
    divergence = 0.5 * (trace + mahalanobis - 2 + torch.log(det_t) - torch.log(det_p))
    # Rounding can make the divergence of identical Gaussians slightly negative.
    return divergence.clamp(min=0)


def kld_box_loss(predicted: Tensor, target: Tensor, tau: float = 1.0) -> Tensor:
    """Return the KLD loss (...,) between predicted and target rotated boxes (..., 5), element by element.

    Args:
        predicted: boxes decoded from the network's outputs; gradients flow here.
        target: ground-truth boxes.
        tau: offset of the loss mapping; 1.0 makes identical boxes cost 0.
    """
    if predicted.shape != target.shape:
        raise ValueError(f"predicted and target boxes must have the same shape, got {tuple(predicted.shape)} and {tuple(target.shape)}")
    if tau < 1.0:
        raise ValueError(f"tau must be at least 1.0 so that the loss stays in [0, 1), got {tau}")
    mean_p, cov_p = boxes_to_gaussians(predicted)
    mean_t, cov_t = boxes_to_gaussians(target)
    divergence = gaussian_kl_divergence(mean_p, cov_p, mean_t, cov_t)
    return 1 - 1 / (tau + torch.log1p(divergence))


def angle_loss(raw_angle: Tensor, target: Tensor) -> Tensor:
    """Return a pi-periodic angle loss (...,) between raw predicted angles and target boxes (..., 5).

    The loss is e * (1 - cos(2 * (raw_angle - target_angle))) / 2, in [0, 1),
    where e = 1 - h / w is the target's elongation: 0 for a square, whose
    angle is arbitrary, and near 1 for a thin box. It has the same value for
    angles that differ by pi, so it has no jump at the ends of the angle
    range, and its gradient is finite everywhere.

    The KLD loss alone barely moves the angle of a prediction that is close to
    round, because a round Gaussian does not depend on its angle. A detector
    that first learns roundish boxes could then keep them, so this term gives
    the angle a gradient of its own. The raw angle is compared before
    `decode_boxes` normalises the box, because `encode_boxes` measures the
    box sides along the target's canonical axes, so the raw angle should
    match the target's canonical angle modulo pi.
    """
    if raw_angle.shape != target.shape[:-1] or target.shape[-1:] != (5,):
        raise ValueError(
            f"raw_angle must have shape (...,) and target (..., 5) with the same leading shape, "
            f"got {tuple(raw_angle.shape)} and {tuple(target.shape)}"
        )
    long_side = torch.maximum(target[..., 2], target[..., 3]).clamp(min=MIN_SIDE)
    short_side = torch.minimum(target[..., 2], target[..., 3])
    elongation = 1 - short_side / long_side
    return elongation * (1 - torch.cos(2 * (raw_angle - target[..., 4]))) / 2
