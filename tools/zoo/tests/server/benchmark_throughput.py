"""Measure publish and pull throughput on loopback, and the bytes a repeated publish sends.

Usage (from the repository root, with docker-registry installed):

    zoo build zoo-manifests/classification/convnext-tiny-pets.yaml --out /tmp/zoo-bench
    python tools/zoo/tests/server/benchmark_throughput.py /tmp/zoo-bench/convnext-tiny-pets-1.0.0.safetensors

Each round starts a fresh docker-registry on 127.0.0.1 and a fresh layout
folder. Timings include hashing the checkpoint (publish) and verifying it
(pull); bytes sent are counted at the client's HTTP connections, request
lines, headers and bodies together. The output is a Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import RegistryServer
from zoo.registry import publish, pull

sent_bytes = 0
_original_send = http.client.HTTPConnection.send


def _counting_send(self: http.client.HTTPConnection, data: object) -> None:
    global sent_bytes
    if isinstance(data, (bytes, bytearray, memoryview)):
        sent_bytes += len(data)
    _original_send(self, data)


http.client.HTTPConnection.send = _counting_send  # type: ignore[method-assign]


def measure(action: Callable[[], object]) -> tuple[float, int]:
    """Run `action`; return its seconds and the HTTP bytes it sent."""
    global sent_bytes
    sent_bytes = 0
    started = time.perf_counter()
    action()
    return time.perf_counter() - started, sent_bytes


def measure_round(checkpoint: Path, work: Path) -> dict[str, tuple[float, int]]:
    """Publish and pull a copy of `checkpoint` through a fresh server and a fresh layout in `work`."""
    source = work / checkpoint.name
    shutil.copyfile(checkpoint, source)
    server = RegistryServer(work / "registry")
    server.start()
    try:
        target = f"oci://{server.address}"
        remote = server.url(_repository(source), "1.0.0")
        return {
            "server: first publish": measure(lambda: publish(source, target)),
            "server: second publish": measure(lambda: publish(source, target)),
            "server: pull": measure(lambda: pull(remote, work / "pulled")),
            "server: pull, file in place": measure(lambda: pull(remote, work / "pulled")),
            "layout: first publish": measure(lambda: publish(source, str(work / "layout"))),
            "layout: second publish": measure(lambda: publish(source, str(work / "layout"))),
            "layout: pull": measure(lambda: pull(f"{work / 'layout'}:1.0.0", work / "from-layout")),
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    size = arguments.checkpoint.stat().st_size
    import heads_core

    # Reading the checkpoint once imports what reading it needs (torch and the
    # task's package), so the first timed publish does not pay for it.
    heads_core.inspect_checkpoint(arguments.checkpoint)

    rows: dict[str, list[tuple[float, int]]] = {}
    for _ in range(arguments.rounds):
        with tempfile.TemporaryDirectory(prefix="zoo-bench-") as folder:
            results = measure_round(arguments.checkpoint, Path(folder))
        for name, value in results.items():
            rows.setdefault(name, []).append(value)

    print(f"checkpoint: {arguments.checkpoint.name}, {size} bytes ({size / 2**20:.1f} MiB); {arguments.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    print()
    print("| step | median s | best s | checkpoint MiB / median s | HTTP bytes sent (max) |")
    print("|---|---|---|---|---|")
    for name, values in rows.items():
        seconds = [value[0] for value in values]
        median = statistics.median(seconds)
        print(f"| {name} | {median:.2f} | {min(seconds):.2f} | {size / 2**20 / median:.0f} | {max(value[1] for value in values)} |")


def _repository(source: Path) -> str:
    return source.name.removesuffix("-1.0.0.safetensors")


if __name__ == "__main__":
    main()
