"""The `zoo` command-line tool and its Python API. Library code lives in heads-core and the task packages.

`zoo.load`, `zoo.publish` and `zoo.pull` are imported on first use, so
importing `zoo` does not import torch or requests.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["load", "publish", "pull"]


def __getattr__(name: str) -> Any:
    if name == "load":
        from .api import load

        return load
    if name in ("publish", "pull"):
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
