"""The build lock file: which manifest produced which checkpoint, with hashes.

`zoo.lock.json` in the output folder maps each checkpoint file name to the
hashes of its manifest file and of the checkpoint, so an unchanged manifest is
not rebuilt. The file is rewritten atomically; concurrent builds on the same
folder take turns through an exclusive `flock` on `.zoo-build.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LOCK_NAME = "zoo.lock.json"
LOCK_VERSION = 1


@dataclass
class LockEntry:
    """The record of one built checkpoint.

    Attributes:
        source: the manifest path as given on the command line.
        manifest_file_sha256: sha256 of the manifest file's bytes.
        manifest_sha256: sha256 of the validated manifest's canonical JSON.
        checkpoint_sha256: sha256 of the checkpoint file.
        size: the checkpoint's size in bytes.
        mtime_ns: the checkpoint's modification time, to skip re-hashing it.
        versions: the versions of torch, torchvision, timm and the heads
            packages that built it; with others installed, it is rebuilt.
        weight_files: size and modification time of each weights file the
            manifest names, by absolute path. When one changes, the checkpoint is rebuilt.
    """

    source: str
    manifest_file_sha256: str
    manifest_sha256: str
    checkpoint_sha256: str
    size: int
    mtime_ns: int
    versions: dict[str, str] = field(default_factory=dict)
    weight_files: dict[str, list[int]] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    """Hash a file in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(out: Path) -> Iterator[None]:
    """Hold the output folder's build lock for the duration of the block."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / ".zoo-build.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_lock(out: Path) -> dict[str, LockEntry]:
    """Read the lock file; a missing or unreadable one counts as empty (everything rebuilds)."""
    path = out / LOCK_NAME
    try:
        data = json.loads(path.read_text())
        if data.get("version") != LOCK_VERSION:
            return {}
        return {name: LockEntry(**entry) for name, entry in data["checkpoints"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def write_lock(out: Path, entries: dict[str, LockEntry]) -> None:
    """Write the lock file atomically, keys sorted."""
    payload = {"version": LOCK_VERSION, "checkpoints": {k: asdict(entries[k]) for k in sorted(entries)}}
    # Imported here, so an unchanged build, which writes no lock, does not load the registry package.
    from .registry.files import write_atomically

    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    write_atomically(out / LOCK_NAME, text.encode())


@functools.cache
def _installed_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def built_with_installed_versions(entry: LockEntry) -> bool:
    """Check that the packages that built the entry's checkpoint are installed in the same versions.

    An entry without versions, written before the lock recorded them, does not match.
    """
    return bool(entry.versions) and all(_installed_version(name) == number for name, number in entry.versions.items())


def file_stamp(path: Path) -> list[int] | None:
    """Return a file's size and modification time in nanoseconds, or None when it cannot be read."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def weight_files_unchanged(entry: LockEntry) -> bool:
    """Check that every weights file the entry's build read has its recorded size and modification time."""
    if not isinstance(entry.weight_files, dict):  # A hand-edited lock may hold another type here, so rebuild.
        return False
    return all(file_stamp(Path(path)) == stamp for path, stamp in entry.weight_files.items())


def checkpoint_unchanged(out: Path, name: str, entry: LockEntry) -> bool:
    """Check that the checkpoint on disk is the one the lock recorded (size and mtime, else the hash)."""
    path = out / name
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != entry.size:
        return False
    if stat.st_mtime_ns == entry.mtime_ns:
        return True
    return file_sha256(path) == entry.checkpoint_sha256
