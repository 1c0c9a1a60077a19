"""Publish checkpoints to a registry, pull them back verified, and list and inspect what a registry contains."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .artifact import (
    ARTIFACT_TYPE,
    Descriptor,
    ParsedArtifact,
    artifact_for_checkpoint,
    file_digest,
    parse_artifact,
)
from .errors import (
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    TagConflictError,
    VerificationError,
)
from .files import create_temporary
from .layout import LayoutStore, is_layout
from .reference import (
    LayoutReference,
    LayoutRoot,
    Reference,
    RegistryRoot,
    RemoteReference,
    parse_reference,
    publish_target,
)
from .remote import Progress, RemoteStore

__all__ = [
    "ArtifactInfo",
    "PublishResult",
    "PullResult",
    "TagInfo",
    "inspect_artifact",
    "is_registry_root",
    "list_repositories",
    "list_tags",
    "open_store",
    "publish",
    "pull",
    "pull_cached",
]

logger = logging.getLogger(__name__)

Store = RemoteStore | LayoutStore
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class PublishResult:
    """The outcome of a publish.

    Attributes:
        reference: the tag reference, such as `oci://HOST/REPO:1.0.0`.
        digest_reference: the same artifact by digest.
        digest: the manifest's digest.
        uploaded_blobs: blobs sent because the registry lacked them.
        present_blobs: blobs the registry already had.
        uploaded_bytes: blob bytes sent; 0 when everything was present.
        previous_digest: what the tag pointed to before, or None for a new tag.
    """

    reference: Reference
    digest_reference: Reference
    digest: str
    uploaded_blobs: int
    present_blobs: int
    uploaded_bytes: int
    previous_digest: str | None

    @property
    def unchanged(self) -> bool:
        """Whether the tag already pointed to this content."""
        return self.previous_digest == self.digest


@dataclass(frozen=True)
class PullResult:
    """The outcome of a pull: the checkpoint file and the artifact it came from."""

    path: Path
    reference: Reference
    digest_reference: Reference
    artifact: ParsedArtifact
    downloaded_bytes: int

    @property
    def downloaded(self) -> bool:
        """Whether the file was downloaded; False when an identical file was already in place."""
        return self.downloaded_bytes > 0 or self.artifact.layer.size == 0


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact's manifest and zoo manifest, read without its weights."""

    reference: Reference
    digest_reference: Reference
    artifact: ParsedArtifact
    zoo_manifest: dict[str, Any]


@dataclass(frozen=True)
class TagInfo:
    """One tag of a repository; `artifact` is None when the tag points to something other than a zoo checkpoint."""

    tag: str
    digest: str
    artifact: ParsedArtifact | None
    problem: str = ""


def open_store(reference: Reference, *, insecure: bool = False) -> Store:
    """Return the store of the reference's repository: a layout folder or a registry server."""
    if isinstance(reference, LayoutReference):
        return LayoutStore(reference)
    return RemoteStore(reference, insecure=insecure)


def _as_reference(reference: Reference | str, registry: str | None) -> Reference:
    return parse_reference(reference, registry=registry) if isinstance(reference, str) else reference


def _require_version(reference: Reference) -> str:
    version = reference.digest or reference.tag
    if not version:
        raise InvalidReferenceError(
            f"{reference} names no tag or digest; add :TAG or @sha256:HEX. `zoo list {reference}` shows the tags"
        )
    return version


# -- publish -----------------------------------------------------------------


def publish(
    checkpoint: str | Path,
    target: str | None = None,
    *,
    registry: str | None = None,
    force: bool = False,
    insecure: bool = False,
    progress: Progress | None = None,
) -> PublishResult:
    """Publish a checkpoint as an OCI artifact and tag it.

    Blobs the registry already has are not sent again. The tag is set last,
    by one manifest upload, so a publish that fails part-way leaves the tag
    as it was, and running it again finishes the work.

    Args:
        checkpoint: a zoo checkpoint file.
        target: where to publish (any reference form, or `oci://HOST[:PORT]`);
            None uses the default registry. The repository defaults to the
            manifest's name and the tag to its version.
        registry: the default registry, as for `--registry`.
        force: move a tag that points to other content.
        insecure: allow plain HTTP to a registry that is not on a loopback host.
        progress: called with a label, bytes done and bytes in total while blobs are copied.

    Raises:
        TagConflictError: the tag points to other content and `force` is False.
        RegistryError: the registry rejected or interrupted the publish.
        heads_core.CheckpointError: the file is not a valid zoo checkpoint.
    """
    artifact = artifact_for_checkpoint(checkpoint)
    reference = publish_target(target, registry=registry, name=artifact.name, version=artifact.version)
    tag = reference.tag
    assert tag is not None
    with open_store(reference, insecure=insecure) as store:
        if isinstance(store, LayoutStore):
            store.create()
            guard = store.lock()
        else:
            # NOTE: a registry server offers no lock, so two publishes racing for one tag may both pass the check below.
            guard = contextlib.nullcontext()
        with guard:
            existing = store.resolve_tag(tag)
            previous = existing[1] if existing else None
            if previous is not None and previous != artifact.digest and not force:
                raise TagConflictError(
                    f"{reference} already points to {previous}, not to {artifact.digest} of {checkpoint}; tags move "
                    "only when forced. Publish under another tag (raise the manifest's version, or give REFERENCE:TAG), "
                    "or pass --force (force=True) to move the tag"
                )
            uploaded, present = 0, 0
            blobs = [
                (artifact.config_descriptor, artifact.config, "the zoo manifest"),
                (artifact.layer_descriptor, artifact.layer_path, artifact.layer_path.name),
            ]
            sent_before = store.blob_bytes_sent
            for descriptor, source, label in blobs:
                if store.blob_size(descriptor.digest) == descriptor.size:
                    present += 1
                    continue
                try:
                    store.upload_blob(descriptor, source, label, progress)
                except RegistryError as error:
                    raise type(error)(f"{error}. The tag {tag} was not changed; run the publish again to finish it") from None
                uploaded += 1
            if previous != artifact.digest:
                try:
                    store.put_manifest(artifact.manifest, artifact.digest, tag, ARTIFACT_TYPE)
                except RegistryError as error:
                    raise type(error)(f"{error}. The blobs are uploaded; run the publish again to set the tag {tag}") from None
            logger.info("published %s as %s (%d blobs uploaded, %d present)", checkpoint, reference, uploaded, present)
            digest_reference = reference.with_version(digest=artifact.digest)
            if isinstance(digest_reference, LayoutReference):
                # An absolute path keeps the printed digest reference usable from any folder.
                digest_reference = replace(digest_reference, path=digest_reference.path.resolve())
            return PublishResult(
                reference,
                digest_reference,
                artifact.digest,
                uploaded,
                present,
                store.blob_bytes_sent - sent_before,
                previous,
            )


# -- pull --------------------------------------------------------------------


def _read_blob(store: Store, descriptor: Descriptor, label: str) -> bytes:
    """Download a small blob into memory and verify its size and digest."""
    data = bytearray()
    with store.open_blob(descriptor, label) as chunks:
        for chunk in chunks:
            data += chunk
            if len(data) > descriptor.size:
                break
    _verify(store, descriptor, label, len(data), "sha256:" + hashlib.sha256(data).hexdigest())
    return bytes(data)


def _verify(store: Store, descriptor: Descriptor, label: str, received: int, digest: str) -> None:
    if received != descriptor.size or digest != descriptor.digest:
        received_text = f"at least {received}" if received > descriptor.size else str(received)
        raise VerificationError(
            f"{label} from {store.location} failed verification: expected {descriptor.size} bytes with "
            f"{descriptor.digest}, received {received_text} bytes with {digest}; the registry's copy is damaged or was "
            "changed, so nothing was written. Publish the checkpoint again"
        )


def _download_verified(
    store: Store,
    descriptor: Descriptor,
    target: Path,
    label: str,
    progress: Progress | None,
    check: Callable[[Path], None],
) -> int:
    """Stream a blob into a temporary file beside `target`, verify it, run `check`, then rename it into place.

    On any failure the temporary file is removed and `target` is untouched.
    Returns the bytes received.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = create_temporary(target)
    try:
        hasher = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out, store.open_blob(descriptor, label) as chunks:
            for chunk in chunks:
                received += len(chunk)
                if received > descriptor.size:
                    break
                hasher.update(chunk)
                out.write(chunk)
                if progress is not None:
                    progress(label, received, descriptor.size)
            out.flush()
            os.fsync(out.fileno())
        _verify(store, descriptor, label, received, "sha256:" + hasher.hexdigest())
        check(temporary)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return received


def _embedded_manifest(path: Path) -> str | None:
    """Return the `zoo.manifest` metadata string of a safetensors file, or None when it has none."""
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            return None
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            return None
        raw = file.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    value = metadata.get("zoo.manifest") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


def _check_consistent(config: bytes, where: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        if _embedded_manifest(path) != config.decode("utf-8"):
            raise VerificationError(
                f"the checkpoint in {where} carries another zoo manifest than the artifact's config blob; the "
                "artifact was not written by `zoo publish` or was altered, so nothing was written"
            )

    return check


def pull(
    reference: Reference | str,
    out: str | Path = ".",
    *,
    registry: str | None = None,
    force: bool = False,
    insecure: bool = False,
    progress: Progress | None = None,
) -> PullResult:
    """Download a checkpoint by tag or digest into the folder `out`, verified.

    The manifest, the config blob and the checkpoint are checked against
    their sizes and sha256 digests, and the checkpoint's embedded manifest
    against the config blob, before the file is renamed into place. A file
    with the same name and content is kept as it is.

    Raises:
        InvalidReferenceError: the reference is invalid or names no tag or digest.
        NotFoundError: the registry lacks the repository, tag or digest.
        VerificationError: content differs from its digest or is not a zoo artifact.
        RegistryError: `out` has a different file of that name and `force` is False,
            or the transfer failed.
    """
    reference = _as_reference(reference, registry)
    folder = Path(out)
    with open_store(reference, insecure=insecure) as store:
        return _pull_with_store(store, reference, lambda artifact: folder, force, progress)


def _pull_with_store(
    store: Store,
    reference: Reference,
    folder_for: Callable[[ParsedArtifact], Path],
    force: bool,
    progress: Progress | None,
) -> PullResult:
    version = _require_version(reference)
    if isinstance(store, LayoutStore):
        store.require()
    data, digest = store.fetch_manifest(version)
    artifact = parse_artifact(data, digest, str(reference))
    config = _read_blob(store, artifact.config, f"the zoo manifest of {reference}")
    target = folder_for(artifact) / artifact.file_name
    digest_reference = reference.with_version(digest=digest)
    if target.exists():
        if file_digest(target) == (artifact.layer.digest, artifact.layer.size):
            logger.info("%s is already in place with the content of %s", target, digest_reference)
            return PullResult(target, reference, digest_reference, artifact, 0)
        if not force:
            raise RegistryError(
                f"{target} exists with other content than {reference}; move it away, pull into another folder, "
                "or pass --force (force=True) to replace it"
            )
    received = _download_verified(store, artifact.layer, target, artifact.file_name, progress, _check_consistent(config, str(reference)))
    logger.info("pulled %s into %s", digest_reference, target)
    return PullResult(target, reference, digest_reference, artifact, received)


def pull_cached(
    reference: Reference | str,
    cache: Path,
    *,
    registry: str | None = None,
    insecure: bool = False,
    progress: Progress | None = None,
) -> PullResult:
    """Pull into `cache/sha256/LAYER-HEX/`, so each checkpoint content has one cached file.

    A cached file is hashed again before use and replaced when it was damaged.
    """
    reference = _as_reference(reference, registry)

    def folder_for(artifact: ParsedArtifact) -> Path:
        return cache / "sha256" / artifact.layer.digest.partition(":")[2]

    with open_store(reference, insecure=insecure) as store:
        return _pull_with_store(store, reference, folder_for, True, progress)


# -- inspect and list --------------------------------------------------------


def inspect_artifact(reference: Reference | str, *, registry: str | None = None, insecure: bool = False) -> ArtifactInfo:
    """Read an artifact's manifest and zoo manifest, verified, without downloading the weights."""
    reference = _as_reference(reference, registry)
    version = _require_version(reference)
    with open_store(reference, insecure=insecure) as store:
        if isinstance(store, LayoutStore):
            store.require()
        data, digest = store.fetch_manifest(version)
        artifact = parse_artifact(data, digest, str(reference))
        config = _read_blob(store, artifact.config, f"the zoo manifest of {reference}")
    try:
        zoo_manifest = json.loads(config.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VerificationError(f"the zoo manifest of {reference} is not valid JSON ({error})") from None
    return ArtifactInfo(reference, reference.with_version(digest=digest), artifact, zoo_manifest)


def list_tags(reference: Reference | str, *, registry: str | None = None, insecure: bool = False) -> list[TagInfo]:
    """Return every tag of a repository with the artifact it points to.

    Raises:
        NotFoundError: the repository does not exist.
    """
    reference = _as_reference(reference, registry)
    found = []
    with open_store(reference, insecure=insecure) as store:
        if isinstance(store, LayoutStore):
            store.require()
        for tag in store.tags():
            tag_reference = reference.with_version(tag=tag)
            try:
                data, digest = store.fetch_manifest(tag)
            except NotFoundError as error:
                found.append(TagInfo(tag, "", None, str(error)))
                continue
            try:
                found.append(TagInfo(tag, digest, parse_artifact(data, digest, str(tag_reference))))
            except VerificationError as error:
                found.append(TagInfo(tag, digest, None, str(error)))
    return found


def list_repositories(root: RegistryRoot, *, insecure: bool = False) -> list[Reference]:
    """Return the repositories of a registry: the layouts below a folder, or a server's catalog below its namespace."""
    if isinstance(root, LayoutRoot):
        if not root.path.is_dir():
            return []
        layouts = sorted(path.parent for path in root.path.rglob("oci-layout") if path.is_file())
        return [LayoutReference(path) for path in layouts]
    prefix = f"{root.namespace}/" if root.namespace else ""
    # The catalog endpoint belongs to no repository, so the store's repository name is a placeholder.
    with RemoteStore(RemoteReference(root.registry, root.namespace or "catalog"), insecure=insecure) as store:
        names = store.repositories()
    return [RemoteReference(root.registry, name) for name in names if name.startswith(prefix)]


def is_registry_root(path: Path) -> bool:
    """Return whether a folder contains OCI image layouts below it but is not one itself."""
    if not path.is_dir() or is_layout(path):
        return False
    return any(candidate.is_file() for candidate in path.rglob("oci-layout"))
