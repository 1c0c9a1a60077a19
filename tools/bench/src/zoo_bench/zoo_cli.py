"""Timings of the `zoo` command: a parallel build, `zoo --help`, and `zoo build` over an unchanged zoo."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .measure import alternate

BUILD_TIMEOUT_S = 3600
COMMAND_TIMEOUT_S = 120
# Wide enough that rich prints every cell of `zoo build`'s table on one line.
TABLE_COLUMNS = "250"
TABLE_FIELDS = ("manifest", "checkpoint", "status", "seconds", "size")


def zoo_executable() -> str:
    """Return the `zoo` console script of the running Python environment."""
    beside = Path(sys.executable).with_name("zoo")
    if beside.exists():
        return str(beside)
    found = shutil.which("zoo")
    if found is None:
        raise FileNotFoundError(f"the zoo command is neither beside {sys.executable} nor on PATH; install tools/zoo")
    return found


def _environment() -> dict[str, str]:
    return {**os.environ, "COLUMNS": TABLE_COLUMNS, "NO_COLOR": "1", "TERM": "dumb"}


def _run(arguments: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(arguments, capture_output=True, text=True, timeout=timeout, env=_environment(), check=False)


def parse_build_table(output: str) -> list[dict[str, Any]]:
    """Read the rows of the table `zoo build` prints (manifest, checkpoint, status, seconds, size)."""
    rows = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) != len(TABLE_FIELDS):
            continue
        row: dict[str, Any] = dict(zip(TABLE_FIELDS, cells))
        try:
            row["seconds"] = float(row["seconds"])
        except ValueError:
            continue
        rows.append(row)
    return rows


def _timed_build(zoo: str, manifests: Path, out: Path, jobs: int) -> dict[str, Any]:
    started = time.perf_counter()
    completed = _run([zoo, "build", str(manifests), "--out", str(out), "-j", str(jobs)], BUILD_TIMEOUT_S)
    wall = time.perf_counter() - started
    return {
        "jobs": jobs,
        "wall_s": wall,
        "exit_code": completed.returncode,
        "rows": parse_build_table(completed.stdout),
        "errors": completed.stderr.strip().splitlines()[-20:],
    }


def _copy_manifests(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)


def _drop_failed(manifests: Path, rows: list[dict[str, Any]]) -> list[str]:
    """Delete the manifests whose build failed from the copy, so the rest forms an unchanged zoo."""
    dropped = []
    for row in rows:
        if row["status"] != "failed":
            continue
        Path(row["manifest"]).unlink(missing_ok=True)
        dropped.append(row["manifest"])
    return dropped


def measure_zoo_cli(manifests: Path, workdir: Path, jobs: int, rounds: int, fresh_build: bool, time_commands: bool) -> dict[str, Any]:
    """Build a copy of the zoo with `-j jobs`, then time `zoo --help` and an unchanged `zoo build` alternately.

    The copy keeps other people's edits to the manifests from changing the
    zoo mid-run. Manifests that fail to build are reported and removed from
    the copy before the unchanged build is timed.
    """
    zoo = zoo_executable()
    copy, out = workdir / "zoo-manifests", workdir / "zoo-build"
    result: dict[str, Any] = {"manifests": str(manifests)}
    if fresh_build or not (out / "zoo.lock.json").exists():
        _copy_manifests(manifests, copy)
        shutil.rmtree(out, ignore_errors=True)
        result["parallel_build"] = _timed_build(zoo, copy, out, jobs)
        for row in result["parallel_build"]["rows"]:
            row["name"] = str(Path(row["manifest"]).relative_to(copy)) if row["manifest"].startswith(str(copy)) else row["manifest"]
        result["dropped"] = _drop_failed(copy, result["parallel_build"]["rows"])
    if not time_commands:
        return result

    check = _timed_build(zoo, copy, out, 1)
    result["unchanged_statuses"] = sorted({row["status"] for row in check["rows"]})
    result["unchanged_exit_code"] = check["exit_code"]
    result["manifest_count"] = len(check["rows"])

    # CPU seconds (user + system) of each command, recorded beside the wall times
    # because other processes on a shared machine stretch the wall time.
    cpu: dict[str, list[float]] = {"help": [], "unchanged_build": []}

    def command(name: str, arguments: list[str]) -> None:
        before = _children_cpu_s()
        completed = _run([zoo, *arguments], COMMAND_TIMEOUT_S)
        cpu[name].append(_children_cpu_s() - before)
        if completed.returncode != 0:
            raise RuntimeError(f"zoo {' '.join(arguments)} exited with {completed.returncode}: {completed.stderr[-500:]}")

    samples = alternate(
        {
            "help": lambda: command("help", ["--help"]),
            "unchanged_build": lambda: command("unchanged_build", ["build", str(copy), "--out", str(out)]),
        },
        rounds,
    )
    result["samples"] = samples
    # alternate() runs one warm-up round first; drop its CPU times.
    result["cpu_samples"] = {name: values[-rounds:] for name, values in cpu.items()}
    return result


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
