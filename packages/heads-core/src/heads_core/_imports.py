"""Imports of optional packages with an install hint when they are missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_EXTRAS = {
    "timm": "pip install 'heads-core[timm]'",
    "torchvision": "pip install 'heads-core[torchvision]'",
}


def require(module: str, needed_for: str) -> ModuleType:
    """Import `module`, or raise naming the exact `pip install` to run."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".", 1)[0]
        install = _EXTRAS.get(package, f"pip install {package}")
        raise MissingDependencyError(package, needed_for, install) from error
