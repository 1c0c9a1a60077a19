"""Measure build time, checkpoint size and load time of each segmentation manifest.

Each manifest is built and loaded in fresh Python processes, so no cache of
an earlier manifest helps it; the times exclude importing torch, timm and
torchvision. Prints a Markdown table.

    python packages/heads-segmentation/benchmarks/measure_manifests.py zoo-manifests/segmentation
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _build(manifest: str, out: str) -> dict[str, float]:
    import heads_core
    import timm  # noqa: F401  (imported before the clock starts)
    import torchvision  # noqa: F401

    started = time.perf_counter()
    manifest_model = heads_core.load_manifest(manifest)
    result = heads_core.build_model(manifest_model, weights_dir=Path(manifest).parent)
    built = time.perf_counter()
    heads_core.save_model(result.model, manifest_model, out, result.reinitialized)
    saved = time.perf_counter()
    return {"build_s": built - started, "save_s": saved - built}


def _load(checkpoint: str) -> dict[str, float]:
    import heads_core
    import timm  # noqa: F401
    import torchvision  # noqa: F401

    started = time.perf_counter()
    heads_core.load_model(checkpoint)
    return {"load_s": time.perf_counter() - started}


def _run(step: str, *args: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, f"--{step}", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", help="folder of manifests")
    parser.add_argument("--build", nargs=2, metavar=("MANIFEST", "CHECKPOINT"), help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="CHECKPOINT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        print(json.dumps(_build(*args.build)))
        return
    if args.load:
        print(json.dumps(_load(args.load)))
        return
    if args.folder is None:
        parser.error("give the folder of manifests")
    print("| manifest | build (s) | save (s) | checkpoint (MiB) | load (s) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as scratch:
        for manifest in sorted(Path(args.folder).glob("*.yaml")):
            checkpoint = str(Path(scratch) / f"{manifest.stem}.safetensors")
            times = _run("build", str(manifest), checkpoint)
            times.update(_run("load", checkpoint))
            size = Path(checkpoint).stat().st_size / 2**20
            print(
                f"| {manifest.stem} | {times['build_s']:.1f} | {times['save_s']:.1f} | {size:.1f} | {times['load_s']:.2f} |",
                flush=True,
            )
            Path(checkpoint).unlink()


if __name__ == "__main__":
    main()
