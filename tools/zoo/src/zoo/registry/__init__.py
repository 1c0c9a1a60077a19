"""Publish zoo checkpoints to OCI registries and pull them back, verified.

A registry is an OCI image layout folder (the default, which needs no server)
or a server that speaks the OCI distribution API. Each checkpoint is one OCI
artifact; see `zoo.registry.artifact` for its layout and `zoo.registry.reference`
for the reference forms.

This package imports `requests` only when a registry server is contacted, so
importing it is cheap.
"""

from __future__ import annotations

from .errors import (
    AuthenticationError,
    InvalidReferenceError,
    NotFoundError,
    RegistryError,
    TagConflictError,
    VerificationError,
)
from .publishing import (
    ArtifactInfo,
    PublishResult,
    PullResult,
    TagInfo,
    inspect_artifact,
    is_registry_root,
    list_repositories,
    list_tags,
    publish,
    pull,
    pull_cached,
)
from .reference import (
    LayoutReference,
    LayoutRoot,
    Reference,
    RemoteReference,
    RemoteRoot,
    default_registry,
    looks_like_reference,
    parse_reference,
    parse_registry,
)

__all__ = [
    "ArtifactInfo",
    "AuthenticationError",
    "InvalidReferenceError",
    "LayoutReference",
    "LayoutRoot",
    "NotFoundError",
    "PublishResult",
    "PullResult",
    "Reference",
    "RegistryError",
    "RemoteReference",
    "RemoteRoot",
    "TagConflictError",
    "TagInfo",
    "VerificationError",
    "default_registry",
    "inspect_artifact",
    "is_registry_root",
    "list_repositories",
    "list_tags",
    "looks_like_reference",
    "parse_reference",
    "parse_registry",
    "publish",
    "pull",
    "pull_cached",
]
