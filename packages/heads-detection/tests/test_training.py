"""A few optimiser steps on one fixed batch lower the loss of every architecture."""

from __future__ import annotations

import pytest
import torch
from heads_core import build_model

from .conftest import (
    ALL_ARCHITECTURES,
    sample_images,
    sample_targets,
    small_manifest,
    task_of,
)

STEPS = 5


@pytest.mark.parametrize("architecture", ALL_ARCHITECTURES)
def test_steps_lower_loss(architecture: str) -> None:
    fields: dict = {"seed": 3}
    if architecture in ("ssd", "ssdlite"):
        fields["fixed_size"] = [96, 96]
    else:
        fields["min_size"], fields["max_size"] = 64, 96
    # Frozen batch norms keep a batch this small from swinging the statistics; SSDLite's
    # extra layers and head keep trainable batch norms, so it gets two images instead of one.
    if architecture != "ssdlite":
        fields["backbone"] = {"frozen_batchnorm": True}
    model = build_model(small_manifest(architecture, **fields)).model
    model.train()
    images = sample_images()[: 2 if architecture == "ssdlite" else 1]
    targets = sample_targets(images, with_masks=task_of(architecture) == "instance_segmentation")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    history = []
    for _ in range(STEPS):
        torch.manual_seed(0)  # the same proposal and anchor sampling at every step
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert history[-1] < 0.95 * history[0], history
