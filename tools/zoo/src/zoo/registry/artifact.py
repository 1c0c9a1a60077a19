"""The OCI artifact of a zoo checkpoint: one image manifest, one config blob, one layer.

The layout follows the artifact guidance of the OCI image specification
(v1.1) and the CNCF ModelPack media type for raw weights:

- the image manifest sets `artifactType` to `application/vnd.zoo.checkpoint.v1`;
- the config blob is the zoo manifest as canonical JSON, the exact string the
  checkpoint stores in its `zoo.manifest` metadata, with media type
  `application/vnd.zoo.manifest.v1+json`;
- the single layer is the safetensors file, uncompressed, with media type
  `application/vnd.cncf.model.weight.v1.raw` and the file name in
  `org.opencontainers.image.title`;
- manifest annotations carry the name, version, description and task.

The manifest is serialised canonically (sorted keys, no spaces, UTF-8) and
holds no timestamps, so one checkpoint has one digest in every registry.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import VerificationError

__all__ = [
    "ARTIFACT_TYPE",
    "CONFIG_MEDIA_TYPE",
    "LAYER_MEDIA_TYPE",
    "MANIFEST_MEDIA_TYPE",
    "Artifact",
    "Descriptor",
    "ParsedArtifact",
    "artifact_for_checkpoint",
    "canonical_bytes",
    "parse_artifact",
    "sha256_digest",
]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.zoo.checkpoint.v1"
CONFIG_MEDIA_TYPE = "application/vnd.zoo.manifest.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.cncf.model.weight.v1.raw"

TITLE = "org.opencontainers.image.title"
VERSION = "org.opencontainers.image.version"
DESCRIPTION = "org.opencontainers.image.description"
MODEL_FILEPATH = "org.cncf.model.filepath"
TASK = "zoo.task"
FORMAT = "zoo.format"

# Distribution registries commonly cap manifests at 4 MiB; zoo manifests are
# about 1 KiB. The config blob contains a zoo manifest, which heads-core caps at
# 1 MiB as a file; the canonical JSON of a valid one stays well below 16 MiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,250}\.safetensors$")


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, its digest and its size in bytes."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the descriptor as the JSON object of the OCI specification."""
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data


@dataclass(frozen=True)
class Artifact:
    """A checkpoint prepared for publishing: manifest bytes, config bytes and the layer file."""

    manifest: bytes
    digest: str
    config: bytes
    config_descriptor: Descriptor
    layer_path: Path
    layer_descriptor: Descriptor
    name: str
    version: str

    @property
    def manifest_descriptor(self) -> Descriptor:
        """The descriptor of the manifest itself."""
        return Descriptor(MANIFEST_MEDIA_TYPE, self.digest, len(self.manifest))


@dataclass(frozen=True)
class ParsedArtifact:
    """A zoo artifact manifest read back from a registry, checked for shape."""

    digest: str
    manifest: dict[str, Any]
    config: Descriptor
    layer: Descriptor
    annotations: dict[str, str]

    @property
    def file_name(self) -> str:
        """The checkpoint's file name, from the layer's title annotation."""
        return self.layer.annotations[TITLE]


def canonical_bytes(data: Any) -> bytes:
    """Serialise JSON canonically: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    """Return `sha256:HEX` of `data`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> tuple[str, int]:
    """Hash a file in 1 MiB chunks; return its digest and size."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def artifact_for_checkpoint(path: str | Path) -> Artifact:
    """Read a zoo checkpoint and build its artifact manifest.

    The checkpoint's header and embedded manifest are validated first, with
    heads-core, so a damaged file or one without zoo metadata is never
    published.

    Raises:
        heads_core.CheckpointError: the file is not a valid zoo checkpoint.
        OSError: the file cannot be read.
    """
    from heads_core import inspect_checkpoint

    path = Path(path)
    header, manifest = inspect_checkpoint(path)
    config = header.metadata["zoo.manifest"].encode("utf-8")
    config_descriptor = Descriptor(CONFIG_MEDIA_TYPE, sha256_digest(config), len(config))
    layer_digest, layer_size = file_digest(path)
    layer_descriptor = Descriptor(LAYER_MEDIA_TYPE, layer_digest, layer_size, {TITLE: path.name, MODEL_FILEPATH: path.name})
    annotations = {
        TITLE: manifest.name,
        VERSION: manifest.version,
        TASK: manifest.task,
        FORMAT: header.metadata["zoo.format"],
    }
    if manifest.description:
        annotations[DESCRIPTION] = manifest.description
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": config_descriptor.to_json(),
        "layers": [layer_descriptor.to_json()],
        "annotations": annotations,
    }
    manifest_bytes = canonical_bytes(document)
    return Artifact(
        manifest_bytes,
        sha256_digest(manifest_bytes),
        config,
        config_descriptor,
        path,
        layer_descriptor,
        manifest.name,
        manifest.version,
    )


def parse_descriptor(data: Any, where: str) -> Descriptor:
    """Check one descriptor of a fetched manifest and return it.

    Raises:
        VerificationError: a field is missing or has the wrong type, or the
            digest is not sha256.
    """
    if not isinstance(data, dict):
        raise VerificationError(f"{where} is not a JSON object")
    media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
    if not isinstance(media_type, str):
        raise VerificationError(f"{where} has no mediaType string")
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise VerificationError(f"{where} has digest {digest!r}; zoo reads only sha256:HEX digests")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise VerificationError(f"{where} has size {size!r}; a size is a non-negative integer")
    annotations = data.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise VerificationError(f"{where} has annotations that do not map strings to strings")
    return Descriptor(media_type, digest, size, dict(annotations))


def parse_artifact(data: bytes, digest: str, where: str) -> ParsedArtifact:
    """Check that verified manifest bytes describe a zoo checkpoint artifact.

    Args:
        data: the manifest bytes, already checked against `digest`.
        digest: the manifest's digest.
        where: the reference, for messages.

    Raises:
        VerificationError: the manifest is not JSON, not an OCI image
            manifest, not a zoo artifact, or has an unsafe file name.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise VerificationError(f"the manifest of {where} is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise VerificationError(f"the manifest of {where} is not a JSON object")
    media_type = document.get("mediaType")
    if document.get("schemaVersion") != 2 or media_type not in (MANIFEST_MEDIA_TYPE, None):
        raise VerificationError(
            f"{where} is a {media_type or 'manifest without mediaType'}, not an OCI image manifest "
            f"({MANIFEST_MEDIA_TYPE}, schemaVersion 2); zoo pulls only artifacts that `zoo publish` wrote"
        )
    artifact_type = document.get("artifactType")
    config = parse_descriptor(document.get("config"), f"the config descriptor of {where}")
    if artifact_type != ARTIFACT_TYPE or config.media_type != CONFIG_MEDIA_TYPE:
        raise VerificationError(
            f"{where} has artifactType {artifact_type!r} and config media type {config.media_type!r}, but a zoo "
            f"checkpoint has {ARTIFACT_TYPE!r} and {CONFIG_MEDIA_TYPE!r}; zoo pulls only artifacts that `zoo publish` wrote"
        )
    layers = document.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        count = len(layers) if isinstance(layers, list) else "no"
        raise VerificationError(f"{where} has {count} layers; a zoo checkpoint artifact has exactly one")
    layer = parse_descriptor(layers[0], f"the layer descriptor of {where}")
    if layer.media_type != LAYER_MEDIA_TYPE:
        raise VerificationError(f"the layer of {where} has media type {layer.media_type!r}; a zoo checkpoint layer has {LAYER_MEDIA_TYPE!r}")
    title = layer.annotations.get(TITLE, "")
    if not _FILE_NAME_RE.match(title) or ".." in title:
        raise VerificationError(
            f"the layer of {where} has file name {title!r} in {TITLE}; a checkpoint file name is a single "
            "file name of letters, digits, '.', '_', '+' and '-' ending in .safetensors"
        )
    if config.size > MAX_CONFIG_BYTES:
        raise VerificationError(f"the config blob of {where} has {config.size} bytes, more than the {MAX_CONFIG_BYTES}-byte limit")
    annotations = document.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise VerificationError(f"the manifest of {where} has annotations that do not map strings to strings")
    return ParsedArtifact(digest, document, config, layer, dict(annotations))
