"""Train a small oriented FCOS on synthetic rotated rectangles on the CPU and measure it.

The model is built from a manifest like any zoo model: an oriented FCOS on a
randomly initialised torchvision MobileNetV3-Small, with a 64-channel feature
pyramid, 96x96 images and two classes that differ in colour. After training, the
script matches detections (score >= 0.3) to the ground truth of held-out images
and prints the mean rotated IoU of the matches, recall, precision and the mean
angle error.

Run from the repository root:

    python packages/heads-detection/examples/train_oriented_fcos.py --out /tmp/oriented

With --out, the folder gets the checkpoint and one held-out image, ready for
`zoo predict /tmp/oriented/oriented-fcos-synthetic-1.0.0.safetensors /tmp/oriented/sample.png --draw drawn.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from pathlib import Path

import torch
from heads_core import build_model, checkpoint_filename, save_model, validate_manifest
from heads_detection.oriented.evaluation import MatchSummary
from heads_detection.oriented.synthetic import SyntheticRectangles
from torch import Tensor, nn

logger = logging.getLogger("train_oriented_fcos")

SCORE_THRESHOLD = 0.3
MATCH_IOU = 0.1


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=200, help="optimiser steps (default 200)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default 16)")
    parser.add_argument("--train-images", type=int, default=480, help="synthetic training images (default 480)")
    parser.add_argument("--test-images", type=int, default=50, help="held-out synthetic images (default 50)")
    parser.add_argument("--image-size", type=int, default=96, help="side of the square images in pixels (default 96)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak AdamW learning rate (default 2e-3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model, the data order and the data (default 0)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint, a sample image and results.json")
    parser.add_argument("--require-iou", type=float, default=None, help="exit with status 1 when the mean IoU is lower")
    return parser.parse_args(argv)


def manifest_data(image_size: int, seed: int) -> dict:
    return {
        "name": "oriented-fcos-synthetic",
        "version": "1.0.0",
        "description": "Oriented FCOS on MobileNetV3-Small trained on synthetic rotated rectangles.",
        "task": "oriented_detection",
        "architecture": "fcos",
        "backbone": {"source": "torchvision", "name": "mobilenet_v3_small"},
        "num_classes": 2,
        "class_names": ["orange", "blue"],
        "fpn_channels": 64,
        "head_convs": 2,
        "min_size": image_size,
        "max_size": image_size,
        "score_threshold": 0.05,
        "nms_threshold": 0.3,
        "detections_per_image": 20,
        "candidates_per_level": 200,
        "seed": seed,
    }


def recompute_batchnorm_statistics(model: nn.Module, images: list[Tensor], batch_size: int) -> None:
    """Replace the running statistics of every batch norm by their average over `images`.

    With a randomly initialised backbone and a high learning rate, the running
    averages kept during training lag behind the weights, so evaluation with
    them loses much of the accuracy. Recomputing them with the final weights
    ("precise BN") fixes that.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.eval()
    for norm in norms:
        norm.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = model.transform(images[start : start + batch_size])
            model.backbone(batch.tensors)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.eval()


def evaluate(model: nn.Module, samples: list[tuple[Tensor, dict[str, Tensor]]]) -> MatchSummary:
    model.eval()
    summary = MatchSummary()
    with torch.no_grad():
        for start in range(0, len(samples), 16):
            chunk = samples[start : start + 16]
            detections = model([image for image, _ in chunk])
            for detection, (_, target) in zip(detections, chunk):
                summary.add(detection, target, SCORE_THRESHOLD, MATCH_IOU)
    return summary


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = parse_arguments(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    # Denormal numbers slow CPU arithmetic down several times late in training.
    torch.set_flush_denormal(True)
    started = time.perf_counter()

    manifest = validate_manifest(manifest_data(arguments.image_size, arguments.seed))
    model = build_model(manifest).model
    size = arguments.image_size
    data = SyntheticRectangles(
        image_size=size, num_classes=2, max_objects=3, min_long_side=size * 0.25, max_long_side=size * 0.5, max_aspect=3.0
    )
    train = data.dataset(arguments.train_images, seed=arguments.seed + 1)
    test = data.dataset(arguments.test_images, seed=arguments.seed + 1_000_003)
    logger.info("built the model and %d + %d images in %.1f s", len(train), len(test), time.perf_counter() - started)

    optimizer = torch.optim.AdamW(model.parameters(), lr=arguments.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=arguments.learning_rate, total_steps=max(1, arguments.iterations), pct_start=0.1
    )
    order = random.Random(arguments.seed)
    train_started = time.perf_counter()
    model.train()
    for step in range(arguments.iterations):
        batch = order.sample(train, min(arguments.batch_size, len(train)))
        losses = model([image for image, _ in batch], [target for _, target in batch])
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        if step % 20 == 0 or step == arguments.iterations - 1:
            parts = ", ".join(f"{name} {float(value.detach()):.3f}" for name, value in losses.items())
            logger.info("step %d/%d (%.0f s): %s", step + 1, arguments.iterations, time.perf_counter() - train_started, parts)
    recompute_batchnorm_statistics(model, [image for image, _ in train], arguments.batch_size)
    train_seconds = time.perf_counter() - train_started

    summary = evaluate(model, test)
    total_seconds = time.perf_counter() - started
    results = {
        "mean_rotated_iou": round(summary.mean_iou, 4),
        "recall": round(summary.recall, 4),
        "precision": round(summary.precision, 4),
        "mean_angle_error_degrees": round(summary.mean_angle_error_degrees, 2),
        "matched": len(summary.ious),
        "ground_truth": summary.num_ground_truth,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "iterations": arguments.iterations,
        "batch_size": arguments.batch_size,
        "threads": torch.get_num_threads(),
    }
    logger.info(
        "held-out images: mean rotated IoU %.3f of %d matches, recall %.3f, precision %.3f, angle error %.1f deg",
        summary.mean_iou, len(summary.ious), summary.recall, summary.precision, summary.mean_angle_error_degrees,
    )
    logger.info("training took %.0f s, everything %.0f s", train_seconds, total_seconds)

    if arguments.out is not None:
        arguments.out.mkdir(parents=True, exist_ok=True)
        save_model(model, manifest, arguments.out / checkpoint_filename(manifest))
        from PIL import Image

        image = (test[0][0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        Image.fromarray(image).save(arguments.out / "sample.png")
        (arguments.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        logger.info("wrote %s, sample.png and results.json to %s", checkpoint_filename(manifest), arguments.out)
    print(json.dumps(results))
    if arguments.require_iou is not None and summary.mean_iou < arguments.require_iou:
        logger.error("mean rotated IoU %.3f is below the required %.3f", summary.mean_iou, arguments.require_iou)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
