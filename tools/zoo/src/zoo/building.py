"""`zoo build`: manifests in, checkpoints and a lock file out.

The fast path checks the lock with file hashes only, so an unchanged zoo is
confirmed without importing torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from .lockfile import (
    LockEntry,
    built_with_installed_versions,
    checkpoint_unchanged,
    exclusive,
    file_stamp,
    read_lock,
    weight_files_unchanged,
    write_lock,
)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


@dataclass
class Outcome:
    """The result of one manifest: status is "built", "up to date" or "failed"."""

    source: str
    status: str
    checkpoint: str = ""
    seconds: float = 0.0
    size: int = 0
    message: str = ""
    invalid_manifest: bool = False
    entry: LockEntry | None = None


def find_manifests(paths: Iterable[Path]) -> list[Path]:
    """Expand folders into the manifest files below them, sorted; keep files as given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in MANIFEST_SUFFIXES and p.is_file())
        else:
            found.append(path)
    return found


def _up_to_date(source: Path, out: Path, lock: dict[str, LockEntry]) -> Outcome | None:
    try:
        file_hash = hashlib.sha256(source.read_bytes()).hexdigest()
    except OSError:
        return None
    for name, entry in lock.items():
        if (
            entry.manifest_file_sha256 == file_hash
            and entry.source == str(source)
            and built_with_installed_versions(entry)
            and weight_files_unchanged(entry)
            and checkpoint_unchanged(out, name, entry)
        ):
            return Outcome(str(source), "up to date", name, 0.0, entry.size, entry=entry)
    return None


def build_one(source: str, out: str, previous: LockEntry | None = None) -> Outcome:
    """Validate, build and save one manifest; bad input gives a failed Outcome instead of an exception."""
    from heads_core import ZooError, build_model, checkpoint_filename, library_versions, load_manifest, save_model
    from heads_core.manifest import canonical_json

    started = time.perf_counter()
    path, out_dir = Path(source), Path(out)
    try:
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        manifest = load_manifest(path)
    except ZooError as error:
        return Outcome(source, "failed", message=str(error), invalid_manifest=True)
    except OSError as error:
        return Outcome(source, "failed", message=f"{source}: cannot read ({error.strerror})", invalid_manifest=True)
    name = checkpoint_filename(manifest)
    manifest_hash = hashlib.sha256(canonical_json(manifest).encode()).hexdigest()
    versions = library_versions()
    if (
        previous is not None
        and previous.manifest_sha256 == manifest_hash
        and built_with_installed_versions(previous)
        and weight_files_unchanged(previous)
        and checkpoint_unchanged(out_dir, name, previous)
    ):
        entry = LockEntry(
            source, file_hash, manifest_hash, previous.checkpoint_sha256, previous.size, previous.mtime_ns, versions,
            previous.weight_files,
        )
        return Outcome(source, "up to date", name, time.perf_counter() - started, previous.size, entry=entry)
    # Stamped before building: a file replaced during the build is seen as changed next time.
    weight_files = _weight_file_stamps(manifest, path.parent)
    try:
        result = build_model(manifest, weights_dir=path.parent)
        target = out_dir / name
        checkpoint_hash = save_model(result.model, manifest, target, result.reinitialized, result.measured_shapes)
    except (ZooError, ValueError, TypeError, RuntimeError, OSError) as error:
        return Outcome(source, "failed", name, time.perf_counter() - started, message=f"{source}: {error}")
    except Exception as error:  # noqa: BLE001 (one manifest's failure, whatever its kind, must not stop the rest)
        message = f"{source}: {type(error).__name__}: {error}"
        return Outcome(source, "failed", name, time.perf_counter() - started, message=message)
    stat = target.stat()
    entry = LockEntry(source, file_hash, manifest_hash, checkpoint_hash, stat.st_size, stat.st_mtime_ns, versions, weight_files)
    return Outcome(source, "built", name, time.perf_counter() - started, stat.st_size, entry=entry)


def _weight_file_stamps(manifest: object, folder: Path) -> dict[str, list[int]]:
    """Return the size and modification time of each weights file a manifest names, by absolute path.

    Backbone weights and whole-model weights (segmentation, detection) count, but
    tags resolved in library caches do not.
    """
    from heads_core import is_weight_file

    stamps: dict[str, list[int]] = {}
    for value in (getattr(getattr(manifest, "backbone", None), "weights", None), getattr(manifest, "weights", None)):
        if isinstance(value, str) and is_weight_file(value):
            path = (folder / value).resolve()  # an absolute value replaces the folder
            stamp = file_stamp(path)
            if stamp is not None:
                stamps[str(path)] = stamp
    return stamps


def _checkpoint_name_of(source: Path) -> str | None:
    """Read name and version from the raw manifest, for pairing it with its lock entry."""
    try:
        from heads_core import read_manifest_data

        data = read_manifest_data(source)
    except Exception:  # noqa: BLE001 (an unreadable manifest, whatever the cause, is reported by build_one)
        return None
    return f"{data.get('name')}-{data.get('version')}.safetensors"


def run_build(sources: list[Path], out: Path, jobs: int = 1) -> Iterator[Outcome]:
    """Build every manifest under the output folder's lock, yielding outcomes as they finish.

    Manifests whose file and checkpoint match the lock are reported up to date
    without importing torch. The lock file is rewritten after each checkpoint,
    so an interrupted build keeps what it finished.
    """
    with exclusive(out):
        _remove_stale_partials(out)
        lock = read_lock(out)
        pending: list[Path] = []
        claimed: dict[str, str] = {}
        for source in sources:
            outcome = _up_to_date(source, out, lock)
            if outcome is None:
                pending.append(source)
                continue
            claimed[outcome.checkpoint] = outcome.source
            yield outcome
        if not pending:
            return
        unique: list[Path] = []
        for source in pending:
            name = _checkpoint_name_of(source)
            owner = claimed.setdefault(name, str(source)) if name else str(source)
            if owner == str(source):
                unique.append(source)
                continue
            yield Outcome(
                str(source),
                "failed",
                name or "",
                message=f"{source}: name and version give {name}, which {owner} already produces; "
                "change name or version",
                invalid_manifest=True,
            )
        for outcome in _run_pending(unique, out, lock, jobs):
            if outcome.entry is not None and outcome.checkpoint:
                lock[outcome.checkpoint] = outcome.entry
                write_lock(out, lock)
            yield outcome


def _remove_stale_partials(out: Path) -> None:
    """Delete temporary files that a killed build left behind; safe because the build lock is held."""
    for leftover in out.glob(".*.partial"):
        leftover.unlink(missing_ok=True)


def _run_pending(pending: list[Path], out: Path, lock: dict[str, LockEntry], jobs: int) -> Iterator[Outcome]:
    previous = {str(source): lock.get(_checkpoint_name_of(source) or "") for source in pending}
    if jobs <= 1 or len(pending) == 1:
        for source in pending:
            yield build_one(str(source), str(out), previous[str(source)])
        return
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, initializer=_start_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(build_one, str(s), str(out), previous[str(s)]): str(s) for s in pending}
        for future in as_completed(futures):
            try:
                yield future.result()
            except Exception as error:  # noqa: BLE001 (a worker that died, killed for memory for example)
                source = futures[future]
                yield Outcome(source, "failed", message=f"{source}: the worker process building it failed ({error!r})")


def _start_worker(threads: int) -> None:
    """Set the worker's torch threads and import the model libraries.

    The imports happen here, so each manifest's reported time covers its
    own build and not the worker's first import of timm or torchvision.
    """
    import torch

    torch.set_num_threads(threads)
    for library in ("torchvision", "timm", "heads_core"):
        with contextlib.suppress(ImportError):
            importlib.import_module(library)
