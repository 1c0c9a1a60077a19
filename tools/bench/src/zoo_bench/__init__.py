"""Benchmark of the model zoo against timm and torchvision.

Run it with the `zoo-bench` command, or from Python::

    from zoo_bench import Settings, run_benchmark

    report = run_benchmark(Settings(groups=("load",), cases=("vit_base",)))
"""

from __future__ import annotations

from .runner import GROUPS, Settings, run_benchmark

__version__ = "0.1.0"

__all__ = ["GROUPS", "Settings", "run_benchmark"]
