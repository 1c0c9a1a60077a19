"""Exceptions of the registry client.

Messages name the bad value, the rule it breaks and what to do next. They never
contain credentials: the client keeps user names, passwords and tokens out of
every message it builds and never puts them into URLs.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "InvalidReferenceError",
    "NotFoundError",
    "RegistryError",
    "TagConflictError",
    "VerificationError",
]


class RegistryError(Exception):
    """Base class of every error the registry client raises."""


class InvalidReferenceError(RegistryError, ValueError):
    """A reference or registry address that does not parse, or names something unsupported."""


class NotFoundError(RegistryError, LookupError):
    """A repository, tag, digest or blob that the registry does not have."""


class TagConflictError(RegistryError):
    """A publish that would move an existing tag to other content without `force`."""


class VerificationError(RegistryError):
    """Content whose size or sha256 differs from its descriptor, or that is not a zoo artifact."""


class AuthenticationError(RegistryError):
    """A registry that rejected the request for missing or wrong credentials."""
