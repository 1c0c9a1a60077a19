"""The model comparisons, each run inside one worker process.

Every function returns a JSON-ready mapping of raw measurements; the parent
process turns them into rows with medians, ratios and verdicts.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from .anchor import build_anchor, load_anchor, pair_keys, state_specs
from .cases import FORWARD_BATCH, ModelCase
from .measure import alternate, reset_peak_rss, status_kib, touch_tensors
from .zoo_side import (
    build_and_save,
    checkpoint_path,
    ensure_checkpoint,
    validated_manifest,
)

WRITE_CHUNK_BYTES = 1 << 20


def prepare(case: ModelCase, workdir: Path) -> dict[str, Any]:
    """Write the case's checkpoint and the pairing of its tensor names with the anchor's.

    This runs in a process of its own, so that the memory measurements that
    follow start in processes that built nothing.
    """
    from heads_core import load_model

    path = ensure_checkpoint(case, workdir)
    zoo_state = load_model(path).model.state_dict()
    anchor_state = build_anchor(case.anchor).state_dict()
    names = pair_keys(state_specs(zoo_state), state_specs(anchor_state))
    names_path(case, workdir).write_text(json.dumps(names, indent=1, sort_keys=True))
    return {"checkpoint_bytes": path.stat().st_size, "tensors": len(names)}


def names_path(case: ModelCase, workdir: Path) -> Path:
    """Return where `prepare` stores the case's name pairing."""
    return workdir / f"{case.key}.names.json"


def _file_names_to_anchor(case: ModelCase, workdir: Path) -> dict[str, str]:
    path = names_path(case, workdir)
    if not path.exists():
        prepare(case, workdir)
    names: dict[str, str] = json.loads(path.read_text())
    return names


def _zoo_ready(path: Path, device: str | None = None) -> torch.nn.Module:
    from heads_core import load_model

    model = load_model(path, device=device).model
    touch_tensors(model)
    return model


def _anchor_ready(case: ModelCase, path: Path, names: dict[str, str]) -> torch.nn.Module:
    model = load_anchor(case.anchor, path, names)
    touch_tensors(model)
    return model


def _read_bytes(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read()


def measure_load(case: ModelCase, rounds: int, workdir: Path) -> dict[str, Any]:
    """Time loading to a ready model: zoo load_model, the anchor, and reading the file's bytes."""
    path = ensure_checkpoint(case, workdir)
    names = _file_names_to_anchor(case, workdir)
    samples = alternate(
        {
            "zoo": lambda: _zoo_ready(path),
            "anchor": lambda: _anchor_ready(case, path, names),
            "read": lambda: _read_bytes(path),
        },
        rounds,
    )
    return {"checkpoint_bytes": path.stat().st_size, "samples": samples, "threads": torch.get_num_threads()}


def _start_torch_runtime() -> None:
    """Run a few small CPU ops, so that torch starts its thread pool and allocator arenas.

    torch does this on the first computation in a process whatever the
    model, and it adds about 20 MiB of resident memory (measured with torch
    2.14 on Linux), which would otherwise count as part of the first load.
    """
    matrix = torch.randn(64, 64)
    image = torch.randn(1, 3, 32, 32)
    (matrix @ matrix).softmax(-1).sum()
    torch.nn.functional.layer_norm(matrix, (64,))
    torch.nn.functional.conv2d(image, torch.randn(8, 3, 3, 3)).relu()
    torch.roll(matrix, 1, 0).masked_fill(matrix > 0, 0.0)


def measure_memory(case: ModelCase, side: str, workdir: Path) -> dict[str, Any]:
    """Measure the peak resident memory one load adds, and its time, in this fresh process.

    Every library is imported, the task plugins are loaded and torch's CPU
    runtime is started before the baseline is taken, so the figure is the
    load's own. The time is that of a first load, which fills the caches
    that later loads in the same process reuse.
    """
    import safetensors.torch  # noqa: F401
    import timm  # noqa: F401
    import torchvision.models  # noqa: F401
    from heads_core import installed_plugins

    path = checkpoint_path(case, workdir)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; the parent process writes it before measuring memory")
    validated_manifest(case)
    installed_plugins()
    names = _file_names_to_anchor(case, workdir) if side == "anchor" else {}
    before_runtime_kib = status_kib("VmRSS")
    _start_torch_runtime()
    gc.collect()
    baseline_kib = status_kib("VmRSS")
    peak_reset = reset_peak_rss()
    if not peak_reset:
        baseline_kib = status_kib("VmHWM")
    started = time.perf_counter()
    model = _zoo_ready(path) if side == "zoo" else _anchor_ready(case, path, names)
    seconds = time.perf_counter() - started
    peak_kib = status_kib("VmHWM")
    return {
        "side": side,
        "checkpoint_bytes": path.stat().st_size,
        "baseline_kib": baseline_kib,
        "runtime_start_kib": baseline_kib - before_runtime_kib,
        "peak_kib": peak_kib,
        "after_kib": status_kib("VmRSS"),
        "added_bytes": (peak_kib - baseline_kib) * 1024,
        "peak_reset": peak_reset,
        "seconds": seconds,
        "tensors": len(model.state_dict()),
    }


def _plain_write(data: memoryview, path: Path) -> None:
    with path.open("wb") as file:
        for start in range(0, len(data), WRITE_CHUNK_BYTES):
            file.write(data[start : start + WRITE_CHUNK_BYTES])
        file.flush()
        os.fsync(file.fileno())


def measure_build(case: ModelCase, rounds: int, workdir: Path) -> dict[str, Any]:
    """Time build_model + save_model against the anchor's constructor and a plain write of the same bytes.

    The plain write ends with fsync, as save_model does.
    """
    manifest = validated_manifest(case)
    path = ensure_checkpoint(case, workdir)
    data = memoryview(_read_bytes(path))
    built = workdir / f"{case.key}.build.safetensors"
    written = workdir / f"{case.key}.write.bin"

    def remove_outputs() -> None:
        # Each step writes a new file: replacing one would add the time to free the old file's blocks.
        built.unlink(missing_ok=True)
        written.unlink(missing_ok=True)

    steps = {
        "build": lambda: build_and_save(manifest, built),
        "constructor": lambda: build_anchor(case.anchor),
        "write": lambda: _plain_write(data, written),
    }
    try:
        samples = alternate(steps, rounds, after=remove_outputs)
    finally:
        remove_outputs()
    return {"checkpoint_bytes": len(data), "samples": samples, "threads": torch.get_num_threads()}


def _input_batch(manifest: Any, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    height, width = manifest.preprocess.input_size
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(FORWARD_BATCH, manifest.backbone.in_chans, height, width, generator=generator)
    return batch.to(device=device, dtype=dtype)


def _forward_models(case: ModelCase) -> tuple[Any, torch.nn.Module, torch.nn.Module]:
    """Build the zoo model and the anchor with the zoo model's weights copied in."""
    from heads_core import build_model

    manifest = validated_manifest(case)
    zoo_model = build_model(manifest).model.eval()
    anchor_model = build_anchor(case.anchor)
    zoo_state = zoo_model.state_dict()
    names = pair_keys(state_specs(zoo_state), state_specs(anchor_model.state_dict()))
    anchor_model.load_state_dict({names[name]: tensor for name, tensor in zoo_state.items()}, strict=True)
    return manifest, zoo_model, anchor_model


def measure_forward(case: ModelCase, rounds: int, threads: int, repeats: int) -> dict[str, Any]:
    """Time one forward pass of a batch through the zoo model and through the anchor, same weights.

    `threads` sets torch's intra-op threads for both models. Each round keeps
    the fastest of `repeats` passes per side.
    """
    torch.set_num_threads(threads)
    manifest, zoo_model, anchor_model = _forward_models(case)
    batch = _input_batch(manifest)
    with torch.inference_mode():
        samples = alternate(
            {"zoo": lambda: zoo_model(batch), "anchor": lambda: anchor_model(batch)}, rounds, warmup=1, repeats=repeats
        )
    return {"batch_shape": list(batch.shape), "samples": samples, "threads": torch.get_num_threads(), "repeats": repeats}


def measure_gpu_load(case: ModelCase, rounds: int, workdir: Path) -> dict[str, Any]:
    """Time loading straight onto the GPU against the anchor's load followed by `.cuda()`."""
    path = ensure_checkpoint(case, workdir)
    names = _file_names_to_anchor(case, workdir)

    def zoo() -> torch.nn.Module:
        model = _zoo_ready(path, device="cuda")
        torch.cuda.synchronize()
        return model

    def anchor() -> torch.nn.Module:
        model = load_anchor(case.anchor, path, names).cuda()
        touch_tensors(model)
        torch.cuda.synchronize()
        return model

    samples = alternate({"zoo": zoo, "anchor": anchor}, rounds)
    return {"checkpoint_bytes": path.stat().st_size, "samples": samples, "device": torch.cuda.get_device_name()}


def measure_gpu_forward(case: ModelCase, rounds: int) -> dict[str, Any]:
    """Time a half-precision forward pass on the GPU, zoo model against the anchor."""
    manifest, zoo_model, anchor_model = _forward_models(case)
    zoo_model, anchor_model = zoo_model.half().cuda(), anchor_model.half().cuda()
    batch = _input_batch(manifest, "cuda", torch.float16)

    def run(model: torch.nn.Module) -> torch.Tensor:
        output = model(batch)
        torch.cuda.synchronize()
        return output

    with torch.inference_mode():
        samples = alternate({"zoo": lambda: run(zoo_model), "anchor": lambda: run(anchor_model)}, rounds, warmup=3)
    return {
        "batch_shape": list(batch.shape), "samples": samples, "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(),
    }
