"""A repository stored as an OCI image layout folder (image-spec v1.1).

The folder contains `oci-layout`, `index.json` and `blobs/sha256/HEX`. Tags are
the `org.opencontainers.image.ref.name` annotations of the descriptors in
`index.json`, one descriptor per tag. Blobs are written to a temporary file,
checked against their digest and renamed into place, and `index.json` is
replaced atomically, so a reader never sees a partial blob or index. Writers
take turns through an exclusive `flock` on the `oci-layout` file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import (
    CHUNK_BYTES,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    Descriptor,
    canonical_bytes,
    parse_descriptor,
    sha256_digest,
)
from .errors import NotFoundError, RegistryError, VerificationError
from .files import create_temporary, write_atomically
from .reference import DIGEST_RE, LayoutReference
from .remote import Progress

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LayoutStore", "is_layout"]

LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"


def is_layout(path: Path) -> bool:
    """Return whether `path` is an OCI image layout folder (it has an `oci-layout` file)."""
    return (path / LAYOUT_FILE).is_file()


class LayoutStore:
    """One repository in an OCI image layout folder."""

    def __init__(self, reference: LayoutReference) -> None:
        self.reference = reference
        self.path = reference.path
        self.blob_bytes_sent = 0

    @property
    def location(self) -> str:
        """The layout, as `oci-layout:PATH`."""
        return self.reference.repository_reference

    def close(self) -> None:
        """Release nothing; present so both stores share one interface."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- structure ----------------------------------------------------------

    def require(self) -> None:
        """Raise NotFoundError unless the folder is an OCI image layout."""
        if not is_layout(self.path):
            state = "does not exist" if not self.path.exists() else "has no oci-layout file"
            raise NotFoundError(
                f"{self.path} is not an OCI image layout ({state}); check the path, or publish to it first with `zoo publish CHECKPOINT {self.location}`"
            )

    def create(self) -> None:
        """Create the layout's files when the folder is new or empty.

        Raises:
            RegistryError: the path is a file, or a non-empty folder that is not a layout.
        """
        if is_layout(self.path):
            return
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            kind = "a folder with other files" if self.path.is_dir() else "a file"
            raise RegistryError(f"{self.path} is {kind}, not an OCI image layout; publish to a new or empty folder, or to an existing layout")
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        write_atomically(self.path / INDEX_FILE, canonical_bytes(index))
        write_atomically(self.path / LAYOUT_FILE, canonical_bytes({"imageLayoutVersion": LAYOUT_VERSION}))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the layout's exclusive write lock for the block."""
        with (self.path / LAYOUT_FILE).open("rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        self.require()
        path = self.path / INDEX_FILE
        try:
            index = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotFoundError(f"{path} is missing; the layout is incomplete, so publish to a new folder") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RegistryError(f"cannot read {path} ({error}); the layout is damaged") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise RegistryError(f"{path} has no manifests list; the layout is damaged")
        return index

    def tags(self) -> list[str]:
        """Return the layout's tags, sorted."""
        return sorted(self._tag_descriptors())

    def _tag_descriptors(self) -> dict[str, Descriptor]:
        found: dict[str, Descriptor] = {}
        for position, entry in enumerate(self._read_index()["manifests"]):
            descriptor = parse_descriptor(entry, f"manifests[{position}] of {self.path / INDEX_FILE}")
            tag = descriptor.annotations.get(REF_NAME)
            if tag:
                found[tag] = descriptor
        return found

    # -- manifests ----------------------------------------------------------

    def fetch_manifest(self, tag_or_digest: str) -> tuple[bytes, str]:
        """Read a manifest by tag or digest and return its verified bytes and digest.

        Raises:
            NotFoundError: no such tag or digest in the layout.
            VerificationError: the manifest blob differs from its digest or size.
        """
        if DIGEST_RE.match(tag_or_digest):
            expected_size = None
            digest = tag_or_digest
            artifact_text = f"{self.location}@{digest}"
        else:
            descriptor = self._tag_descriptors().get(tag_or_digest)
            artifact_text = f"{self.location}:{tag_or_digest}"
            if descriptor is None:
                raise NotFoundError(f"{artifact_text} not found: the layout has no tag {tag_or_digest!r}; `zoo list {self.path}` shows its tags")
            digest, expected_size = descriptor.digest, descriptor.size
        path = self.blob_path(digest)
        try:
            size = path.stat().st_size
            if size > MAX_MANIFEST_BYTES:
                raise VerificationError(f"the manifest of {artifact_text} has {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit")
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{artifact_text} not found: the layout has no blob {digest}") from None
        if expected_size is not None and len(data) != expected_size:
            raise VerificationError(f"the manifest of {artifact_text} has {len(data)} bytes, but index.json records {expected_size}; the layout was changed or damaged")
        if sha256_digest(data) != digest:
            raise VerificationError(f"the manifest of {artifact_text} does not match its digest {digest}; the layout was changed or damaged")
        return data, digest

    def resolve_tag(self, tag: str) -> tuple[bytes, str] | None:
        """Return the manifest a tag points to and its digest, or None when the layout or tag does not exist."""
        if not is_layout(self.path):
            return None
        try:
            return self.fetch_manifest(tag)
        except NotFoundError:
            return None

    def put_manifest(self, data: bytes, digest: str, tag: str, artifact_type: str | None = None) -> None:
        """Store a manifest blob and point `tag` at it, replacing the tag's previous descriptor."""
        descriptor = Descriptor(MANIFEST_MEDIA_TYPE, digest, len(data), {REF_NAME: tag})
        self.write_blob(descriptor, data, "manifest")
        index = self._read_index()
        other_tags = [entry for entry in index["manifests"] if not (isinstance(entry, dict) and (entry.get("annotations") or {}).get(REF_NAME) == tag)]
        entry = descriptor.to_json()
        if artifact_type:
            entry["artifactType"] = artifact_type
        index["manifests"] = [*other_tags, entry]
        write_atomically(self.path / INDEX_FILE, canonical_bytes(index))

    # -- blobs --------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Return the file of a blob; `digest` must be `sha256:HEX`."""
        if not DIGEST_RE.match(digest):
            raise VerificationError(f"digest {digest!r} is not sha256:HEX")
        return self.path / "blobs" / "sha256" / digest.partition(":")[2]

    def blob_size(self, digest: str) -> int | None:
        """Return a blob's size when the layout has it with its recorded content, else None.

        The content is hashed, so a damaged blob counts as missing and the
        next publish replaces it.
        """
        path = self.blob_path(digest)
        try:
            with path.open("rb") as file:
                hasher = hashlib.sha256()
                size = 0
                for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
                    hasher.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            return None
        return size if f"sha256:{hasher.hexdigest()}" == digest else None

    def write_blob(self, descriptor: Descriptor, source: Path | bytes, label: str, progress: Progress | None = None) -> None:
        """Copy `source` into the layout as a blob, checking its size and digest before renaming it into place."""
        target = self.blob_path(descriptor.digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        written = 0
        fd, temporary = create_temporary(target)
        try:
            with os.fdopen(fd, "wb") as out:
                if isinstance(source, bytes):
                    out.write(source)
                    hasher.update(source)
                    written = len(source)
                else:
                    with source.open("rb") as file:
                        for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
                            out.write(chunk)
                            hasher.update(chunk)
                            written += len(chunk)
                            if progress is not None:
                                progress(label, written, descriptor.size)
                out.flush()
                os.fsync(out.fileno())
            actual = f"sha256:{hasher.hexdigest()}"
            if actual != descriptor.digest or written != descriptor.size:
                raise VerificationError(
                    f"{label} changed while it was copied into {self.location}: expected {descriptor.size} bytes with "
                    f"{descriptor.digest}, copied {written} bytes with {actual}; publish it again"
                )
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self.blob_bytes_sent += written

    def upload_blob(self, descriptor: Descriptor, source: Path | bytes, label: str, progress: Progress | None = None) -> None:
        """Store one blob; the same call as on a registry server."""
        self.write_blob(descriptor, source, label, progress)

    @contextlib.contextmanager
    def open_blob(self, descriptor: Descriptor, label: str) -> Iterator[Iterator[bytes]]:
        """Stream a blob's bytes; the caller verifies them."""
        path = self.blob_path(descriptor.digest)
        try:
            file = path.open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"{label} ({descriptor.digest}) is missing from {self.location}; the layout is incomplete, so publish the checkpoint again") from None
        with file:
            yield iter(lambda: file.read(CHUNK_BYTES), b"")
