"""Run the benchmark: one worker process per comparison, rows collected into a report.

The parent process imports no torch; every measurement happens in a worker
started with `python -m zoo_bench.worker`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import cases as case_table
from .cases import ModelCase
from .machine import describe_machine, load_average
from .rows import (
    ERROR,
    FAIL,
    SKIPPED,
    Row,
    build_row,
    cli_rows,
    cold_load_row,
    forward_row,
    gpu_load_row,
    jobs_row,
    load_rows,
    memory_row,
)

GROUPS = ("load", "memory", "build", "forward", "jobs", "cli", "gpu")
# A half-precision forward pass on a GPU is held to the same 2 % as on the CPU.
GPU_FORWARD_MAX_RATIO = 1.02
ERROR_TAIL_LINES = 15
DEFAULT_MANIFESTS = Path("zoo-manifests")


@dataclass
class Settings:
    """Benchmark settings: the comparisons to run and their rounds. Every field has a command-line option."""

    groups: tuple[str, ...] = GROUPS
    cases: tuple[str, ...] = ()
    rounds: int = 5
    build_rounds: int = 3
    forward_rounds: int = 7
    # One thread keeps the forward timings steadier on a machine that other
    # processes share: a preempted thread then stalls no other.
    forward_threads: int = 1
    forward_repeats: int = 3
    memory_rounds: int = 2
    command_rounds: int = 10
    jobs: int = 2
    # None means zoo-manifests, or with `smoke` a folder of two tiny manifests.
    manifests: Path | None = None
    workdir: Path | None = None
    keep_workdir: bool = False
    smoke: bool = False
    worker_timeout_s: float = 3600.0


@dataclass
class Run:
    """State of one benchmark run: where workers write, and what they produced."""

    settings: Settings
    workdir: Path
    log: Callable[[str], None]
    rows: list[Row] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def worker(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Run one spec in a fresh Python process and return its result, or {"error": ...}."""
        index = len(self.workers)
        spec = {"workdir": str(self.workdir), **spec}
        spec_path = self.workdir / f"spec-{index:03d}.json"
        result_path = self.workdir / f"result-{index:03d}.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        title = f"{spec['kind']} {spec.get('case', {}).get('key', '')} {spec.get('side', '')}".strip()
        self.log(f"running {title} ...")
        started = time.perf_counter()
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "zoo_bench.worker", str(spec_path), str(result_path)],
                capture_output=True, text=True, timeout=self.settings.worker_timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            result: dict[str, Any] = {"error": f"{title} timed out after {self.settings.worker_timeout_s:g} s"}
        else:
            if completed.returncode == 0:
                result = json.loads(result_path.read_text())
            else:
                tail = completed.stderr.strip().splitlines()[-ERROR_TAIL_LINES:]
                self.log("\n".join(tail))
                result = {"error": f"{title} exited with {completed.returncode}: {tail[-1] if tail else ''}"}
        elapsed = time.perf_counter() - started
        self.log(f"  {title}: {elapsed:.1f} s")
        self.workers.append({"spec": title, "seconds": elapsed})
        return result


def _selected(cases: tuple[ModelCase, ...], keys: tuple[str, ...]) -> list[ModelCase]:
    return [case for case in cases if not keys or case.key in keys]


def _run_model_case(run: Run, case: ModelCase) -> None:
    """Prepare the checkpoint, then build, load and memory comparisons for one case."""
    groups, settings = run.settings.groups, run.settings
    prepared = run.worker({"kind": "prepare", "case": case.to_json()})
    if "not_measurable" in prepared or "error" in prepared:
        # The rows of every selected group carry the reason.
        if "build" in groups:
            run.rows.append(build_row(case.label, prepared))
        if "load" in groups:
            run.rows += load_rows(case.label, case.min_speedup, prepared)
        if "memory" in groups:
            run.rows.append(memory_row(case.label, [prepared], [prepared]))
        return
    if "build" in groups:
        run.rows.append(build_row(case.label, run.worker({"kind": "build", "case": case.to_json(), "rounds": settings.build_rounds})))
    if "load" in groups:
        run.rows += load_rows(case.label, case.min_speedup, run.worker({"kind": "load", "case": case.to_json(), "rounds": settings.rounds}))
    if "memory" in groups:
        results: dict[str, list[dict[str, Any]]] = {"zoo": [], "anchor": []}
        for index in range(settings.memory_rounds):
            sides = ("zoo", "anchor") if index % 2 == 0 else ("anchor", "zoo")
            for side in sides:
                results[side].append(run.worker({"kind": "memory", "case": case.to_json(), "side": side}))
        run.rows.append(memory_row(case.label, results["zoo"], results["anchor"]))
        cold = cold_load_row(case.label, results["zoo"], results["anchor"])
        if cold is not None:
            run.rows.append(cold)


def _cuda_available() -> bool:
    completed = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        capture_output=True, text=True, check=False,
    )
    return completed.stdout.strip() == "True"


def _run_gpu(run: Run, load_cases: list[ModelCase], forward_cases: list[ModelCase]) -> None:
    if not _cuda_available():
        run.rows.append(Row("gpu", "load to GPU, half-precision forward", status=SKIPPED, note="CUDA is not available"))
        return
    for case in load_cases:
        run.rows.append(gpu_load_row(case.label, run.worker({"kind": "gpu_load", "case": case.to_json(), "rounds": run.settings.rounds})))
    for case in forward_cases:
        result = run.worker({"kind": "gpu_forward", "case": case.to_json(), "rounds": run.settings.forward_rounds})
        run.rows.append(forward_row(f"fp16: {case.label}", result, group="gpu", max_ratio=GPU_FORWARD_MAX_RATIO))


def _smoke_manifests(folder: Path) -> Path:
    """Write manifests of the smoke cases into `folder`, one per file."""
    folder.mkdir(parents=True, exist_ok=True)
    for case in (*case_table.SMOKE_LOAD_CASES, *case_table.SMOKE_FORWARD_CASES):
        (folder / f"{case.key}.json").write_text(json.dumps(case.manifest, indent=1))
    return folder


def _run_zoo_cli(run: Run) -> None:
    groups, settings = run.settings.groups, run.settings
    manifests = settings.manifests
    if manifests is None:
        manifests = _smoke_manifests(run.workdir / "smoke-manifests") if settings.smoke else DEFAULT_MANIFESTS
    spec = {
        "kind": "zoo_cli", "manifests": str(manifests.resolve()), "jobs": settings.jobs,
        "rounds": settings.command_rounds, "fresh_build": "jobs" in groups, "time_commands": "cli" in groups,
    }
    result = run.worker(spec)
    if "parallel_build" in result:
        run.extra["parallel_build"] = result["parallel_build"]
        run.extra["dropped_manifests"] = result.get("dropped", [])
    if "jobs" in groups:
        run.rows.append(jobs_row(result))
    if "cli" in groups:
        run.rows += cli_rows(result)


def run_benchmark(settings: Settings, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every selected comparison and return the report as a JSON-ready mapping."""
    unknown = set(settings.groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown groups {sorted(unknown)}; choose from {', '.join(GROUPS)}")
    started = time.perf_counter()
    load_at_start = load_average()
    workdir = settings.workdir or Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    run = Run(settings, workdir, log or (lambda message: print(message, file=sys.stderr, flush=True)))
    load_cases = _selected(case_table.SMOKE_LOAD_CASES if settings.smoke else case_table.LOAD_CASES, settings.cases)
    forward_cases = _selected(case_table.SMOKE_FORWARD_CASES if settings.smoke else case_table.FORWARD_CASES, settings.cases)
    try:
        if {"load", "memory", "build"} & set(settings.groups):
            for case in load_cases:
                _run_model_case(run, case)
        if "forward" in settings.groups:
            for case in forward_cases:
                spec = {
                    "kind": "forward", "case": case.to_json(), "rounds": settings.forward_rounds,
                    "threads": settings.forward_threads, "repeats": settings.forward_repeats,
                }
                run.rows.append(forward_row(case.label, run.worker(spec)))
        if {"jobs", "cli"} & set(settings.groups):
            _run_zoo_cli(run)
        if "gpu" in settings.groups:
            _run_gpu(run, load_cases, forward_cases)
    finally:
        if not settings.keep_workdir and settings.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "format": 1,
        "machine": {**describe_machine(), "load_average_start": load_at_start, "load_average_end": load_average()},
        "settings": {**asdict(settings), "manifests": str(settings.manifests or ""), "workdir": str(workdir)},
        "rows": [row.to_json() for row in run.rows],
        **run.extra,
        "workers": run.workers,
        "wall_s": time.perf_counter() - started,
        "failed": sum(row.status in (FAIL, ERROR) for row in run.rows),
    }
