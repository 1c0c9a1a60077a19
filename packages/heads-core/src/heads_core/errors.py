"""Exceptions raised by heads-core.

Every message names the bad value, the rule it breaks and what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CheckpointError",
    "ManifestError",
    "ManifestProblem",
    "MissingDependencyError",
    "WeightsNotFoundError",
    "ZooError",
]


class ZooError(Exception):
    """Base class of every error heads-core raises on bad input."""


@dataclass(frozen=True)
class ManifestProblem:
    """One invalid field of a manifest."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


@dataclass
class ManifestError(ZooError, ValueError):
    """A manifest that cannot be read or does not validate.

    Attributes:
        source: the file the manifest came from, or a description such as
            "<dict>" when it was passed in memory.
        problems: one entry per invalid field.
    """

    source: str
    problems: list[ManifestProblem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"{self.source}: {problem}" for problem in self.problems]
        return "\n".join(lines) if lines else f"{self.source}: invalid manifest"


class CheckpointError(ZooError, ValueError):
    """A checkpoint file that is damaged, incomplete or not a zoo checkpoint."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class WeightsNotFoundError(ZooError, FileNotFoundError):
    """Pretrained weights that are not in any local cache or file."""

    def __init__(self, what: str, searched: list[str], hint: str) -> None:
        self.searched = searched
        places = "\n".join(f"  - {place}" for place in searched)
        super().__init__(f"pretrained weights {what} not found; searched:\n{places}\n{hint}")


class MissingDependencyError(ZooError, ImportError):
    """An optional package that a manifest needs is not installed."""

    def __init__(self, package: str, needed_for: str, install: str) -> None:
        self.package = package
        super().__init__(f"{needed_for} needs the package {package!r}, which is not installed; run: {install}")
