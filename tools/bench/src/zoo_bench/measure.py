"""Timing in alternating rounds, page touching and resident-memory readings."""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

PAGE_BYTES = 4096
STATUS_FILE = Path("/proc/self/status")
CLEAR_REFS_FILE = Path("/proc/self/clear_refs")
# Writing this to /proc/self/clear_refs sets the peak resident size (VmHWM)
# back to the current resident size (Linux 4.0 and later).
RESET_PEAK_RSS = "5"


def alternate(
    steps: Mapping[str, Callable[[], Any]],
    rounds: int,
    warmup: int = 1,
    repeats: int = 1,
    after: Callable[[], Any] | None = None,
) -> dict[str, list[float]]:
    """Time every step once per round and return each step's seconds, round by round.

    The order rotates each round (A B C, then B C A, ...), so a slow spell on
    a shared machine does not always land on the same step. With `repeats`
    above 1, a round runs the steps that many times in turn and keeps each
    step's fastest time, which drops the runs that other processes slowed
    down. What a step returns is dropped and garbage-collected outside the
    timed region, and `after`, when given, runs there too, after every step.
    `warmup` rounds run first and are not recorded.
    """
    names = list(steps)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        shift = index % len(names)
        fastest = dict.fromkeys(names, float("inf"))
        for _ in range(repeats):
            for name in names[shift:] + names[:shift]:
                fastest[name] = min(fastest[name], _timed(steps[name]))
                if after is not None:
                    after()
        if index >= warmup:
            for name in names:
                samples[name].append(fastest[name])
    return samples


def _timed(step: Callable[[], Any]) -> float:
    gc.collect()
    started = time.perf_counter()
    result = step()
    elapsed = time.perf_counter() - started
    del result
    gc.collect()
    return elapsed


def median(values: Sequence[float]) -> float:
    """Return the median of a non-empty sequence."""
    return float(statistics.median(values))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """Return the first and third quartiles; a single value is both."""
    if len(values) < 2:
        return float(values[0]), float(values[0])
    first, _, third = statistics.quantiles(values, n=4, method="inclusive")
    return float(first), float(third)


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Return numerator / denominator for each round."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


def touch_tensors(module: Any) -> float:
    """Read one element of every memory page of every parameter and buffer of `module`.

    After this, every byte of the model's tensors is resident, whether it was
    copied into anonymous memory or is a view of a memory-mapped file. Shared
    tensors are read once. Returns a sum of the elements read, so the reads
    cannot be skipped.
    """
    total = 0.0
    seen: set[int] = set()
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        data = tensor.detach()
        if data.device.type == "meta" or data.numel() == 0 or data.data_ptr() in seen:
            continue
        seen.add(data.data_ptr())
        flat = data.reshape(-1)
        step = max(1, PAGE_BYTES // data.element_size())
        total += float(flat[::step].sum()) + float(flat[-1])
    return total


def status_kib(field: str) -> int:
    """Return a `kB` field of /proc/self/status, such as VmRSS or VmHWM."""
    for line in STATUS_FILE.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(f"{field} is missing from {STATUS_FILE}")


def reset_peak_rss() -> bool:
    """Set the process's peak resident size to its current one; False when the kernel does not allow it."""
    try:
        CLEAR_REFS_FILE.write_text(RESET_PEAK_RSS)
    except OSError:
        return False
    return status_kib("VmHWM") <= status_kib("VmRSS") + 1024
