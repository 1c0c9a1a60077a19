"""Measure build time, checkpoint size and load time of every detection and instance-segmentation manifest.

Run from the repository root:

    python packages/heads-detection/benchmarks/measure_manifests.py [--threads N] [--out FOLDER]

Each manifest is built with `heads_core.build_model` and written with
`heads_core.save_model` (build time covers both), then read back with
`heads_core.load_model` (load time). Imports happen before the first
measurement. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from heads_core import (
    build_model,
    checkpoint_filename,
    load_manifest,
    load_model,
    save_model,
)

FOLDERS = ("zoo-manifests/detection", "zoo-manifests/instance_segmentation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoints (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="detection-manifests-"))
    out.mkdir(parents=True, exist_ok=True)

    print(f"torch threads: {torch.get_num_threads()}")
    print("| manifest | architecture | backbone | build s | checkpoint MiB | load s |")
    print("|---|---|---|---:|---:|---:|")
    for folder in FOLDERS:
        for path in sorted(Path(folder).glob("*.yaml")):
            manifest = load_manifest(path)
            target = out / checkpoint_filename(manifest)
            started = time.perf_counter()
            result = build_model(manifest, weights_dir=path.parent)
            save_model(result.model, manifest, target, result.reinitialized)
            built = time.perf_counter() - started
            del result
            started = time.perf_counter()
            load_model(target)
            loaded = time.perf_counter() - started
            size = target.stat().st_size / 2**20
            backbone = f"{manifest.backbone.source}:{manifest.backbone.name}"
            print(f"| {path.name} | {manifest.architecture} | {backbone} | {built:.1f} | {size:.1f} | {loaded:.2f} |", flush=True)


if __name__ == "__main__":
    main()
