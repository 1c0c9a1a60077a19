"""References: which registry contains an artifact, and which artifact it is.

A reference takes one of these forms:

- `oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:HEX]`: a registry server that
  speaks the OCI distribution API.
- `oci-layout:PATH[:TAG|@sha256:HEX]`: an OCI image layout folder, which holds
  one repository.
- `PATH[:TAG|@sha256:HEX]` where PATH starts with `.`, `/` or `~` or contains
  `/`: the same, written as a plain path.
- `NAME[:TAG|@sha256:HEX]`: the repository NAME in the default registry.

The default registry is the `--registry` option, else the `ZOO_REGISTRY`
environment variable, else the folder `$XDG_CACHE_HOME/zoo/registry`
(`~/.cache/zoo/registry` when XDG_CACHE_HOME is unset). It is either a folder
that holds one OCI image layout per repository, or `oci://HOST[:PORT][/NAMESPACE]`,
in which case NAME stands for `oci://HOST[:PORT]/NAMESPACE/NAME`.

Repository names, tags and digests follow the grammar of the OCI distribution
specification (v1.1): lower-case path components separated by `/`, tags of up
to 128 characters from `[A-Za-z0-9_.-]` that do not start with `.` or `-`, and
sha256 digests.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import InvalidReferenceError

__all__ = [
    "LayoutReference",
    "LayoutRoot",
    "Reference",
    "RegistryRoot",
    "RemoteReference",
    "RemoteRoot",
    "cache_home",
    "default_registry",
    "is_loopback",
    "looks_like_reference",
    "parse_reference",
    "parse_registry",
    "publish_target",
    "tag_for_version",
]

REGISTRY_ENV = "ZOO_REGISTRY"
OCI_SCHEME = "oci://"
LAYOUT_PREFIX = "oci-layout:"
MAX_REPOSITORY_LENGTH = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
NAME_RE = re.compile(rf"^{_COMPONENT}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
# Any algorithm:encoded digest; at least 32 encoded characters tell it apart from HOST:PORT.
_ANY_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_HOST_LABEL = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
REGISTRY_RE = re.compile(rf"^(?P<host>{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{{1,5}}))?$")

REFERENCE_FORMS = (
    "oci://HOST[:PORT]/REPOSITORY[:TAG|@sha256:HEX] for a registry server, "
    "oci-layout:PATH[:TAG|@sha256:HEX] or a folder path containing '/' for an OCI image layout, "
    "or NAME[:TAG|@sha256:HEX] for a repository in the default registry"
)
REPOSITORY_RULE = (
    "lower-case letters and digits in components joined by '.', '_', '__' or '-', "
    f"components separated by '/', at most {MAX_REPOSITORY_LENGTH} characters"
)
TAG_RULE = "1 to 128 characters from letters, digits, '_', '.' and '-', not starting with '.' or '-'"


@dataclass(frozen=True)
class RemoteReference:
    """An artifact, or a repository when tag and digest are None, on a registry server.

    Attributes:
        registry: `HOST` or `HOST:PORT`, with IPv6 addresses in brackets.
        repository: the repository path, such as `team/resnet18`.
        tag: the tag, or None.
        digest: `sha256:HEX`, or None.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def host(self) -> str:
        """The host name or IP address, without port and brackets."""
        match = REGISTRY_RE.match(self.registry)
        host = match.group("host") if match else self.registry
        return host[1:-1] if host.startswith("[") else host

    @property
    def repository_reference(self) -> str:
        """The repository without tag or digest, as `oci://HOST/REPOSITORY`."""
        return f"{OCI_SCHEME}{self.registry}/{self.repository}"

    def with_version(self, tag: str | None = None, digest: str | None = None) -> RemoteReference:
        """Return the same repository with another tag or digest."""
        return replace(self, tag=tag, digest=digest)

    def __str__(self) -> str:
        return self.repository_reference + _suffix(self.tag, self.digest)


@dataclass(frozen=True)
class LayoutReference:
    """An artifact, or the whole repository when tag and digest are None, in an OCI image layout folder."""

    path: Path
    tag: str | None = None
    digest: str | None = None

    @property
    def repository_reference(self) -> str:
        """The layout without tag or digest, as `oci-layout:PATH`."""
        return f"{LAYOUT_PREFIX}{self.path}"

    def with_version(self, tag: str | None = None, digest: str | None = None) -> LayoutReference:
        """Return the same layout with another tag or digest."""
        return replace(self, tag=tag, digest=digest)

    def __str__(self) -> str:
        return self.repository_reference + _suffix(self.tag, self.digest)


Reference = RemoteReference | LayoutReference


@dataclass(frozen=True)
class LayoutRoot:
    """A default registry that is a folder holding one OCI image layout per repository."""

    path: Path

    def reference(self, name: str, tag: str | None = None, digest: str | None = None) -> LayoutReference:
        """Return the reference of repository `name` in this folder."""
        return LayoutReference(self.path / name, tag, digest)

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class RemoteRoot:
    """A default registry on a server; repositories are placed below `namespace` when it is set."""

    registry: str
    namespace: str = ""

    def reference(self, name: str, tag: str | None = None, digest: str | None = None) -> RemoteReference:
        """Return the reference of repository `name` on this server."""
        repository = f"{self.namespace}/{name}" if self.namespace else name
        _check_repository(repository, f"{self}/{name}")
        return RemoteReference(self.registry, repository, tag, digest)

    def __str__(self) -> str:
        return f"{OCI_SCHEME}{self.registry}" + (f"/{self.namespace}" if self.namespace else "")


RegistryRoot = LayoutRoot | RemoteRoot


def _suffix(tag: str | None, digest: str | None) -> str:
    if digest:
        return f"@{digest}"
    return f":{tag}" if tag else ""


def cache_home() -> Path:
    """Return `$XDG_CACHE_HOME`, or `~/.cache` when it is unset or empty."""
    configured = os.environ.get("XDG_CACHE_HOME")
    return Path(configured) if configured else Path.home() / ".cache"


def is_loopback(host: str) -> bool:
    """Return whether `host` is `localhost` or a loopback IP address; no name is resolved."""
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tag_for_version(version: str) -> str:
    """Return the tag for a manifest version: the version with '+' replaced by '_'.

    Tags cannot contain '+', so a version such as `1.0.0+cpu` is tagged
    `1.0.0_cpu`, the convention Helm uses for OCI tags.
    """
    tag = version.replace("+", "_")
    if not TAG_RE.match(tag):
        raise InvalidReferenceError(
            f"version {version!r} gives tag {tag!r}, which is not a valid tag ({TAG_RULE}); "
            "give a tag explicitly, such as oci://HOST/REPOSITORY:TAG"
        )
    return tag


def parse_registry(text: str) -> RegistryRoot:
    """Parse a default-registry address: a folder, or `oci://HOST[:PORT][/NAMESPACE]`."""
    if text.startswith(OCI_SCHEME):
        registry, path, tag, digest = _split_remote(text)
        if tag or digest:
            raise InvalidReferenceError(
                f"registry {text!r} has a tag or digest; a registry address is oci://HOST[:PORT][/NAMESPACE] "
                "without one. Put the tag on the reference instead"
            )
        if path:
            _check_repository(path, text)
        return RemoteRoot(registry, path)
    text = text.removeprefix(LAYOUT_PREFIX)
    if not text:
        raise InvalidReferenceError(f"the registry address is empty; give a folder or oci://HOST[:PORT], or unset {REGISTRY_ENV}")
    return LayoutRoot(Path(os.path.expanduser(text)))


def default_registry(option: str | None = None) -> RegistryRoot:
    """Return the default registry: `option`, else `$ZOO_REGISTRY`, else the cache folder."""
    if option:
        return parse_registry(option)
    configured = os.environ.get(REGISTRY_ENV)
    if configured:
        return parse_registry(configured)
    return LayoutRoot(cache_home() / "zoo" / "registry")


def looks_like_reference(text: str) -> bool:
    """Return whether `text` is written as a registry reference rather than a checkpoint path.

    References start with `oci://` or `oci-layout:`, are a path with a tag or
    digest or to an existing OCI image layout, or are a bare repository name
    with an optional tag or digest. Names of checkpoint and manifest files
    never count as references.
    """
    if text.startswith((OCI_SCHEME, LAYOUT_PREFIX)):
        return True
    if text.endswith((".safetensors", ".yaml", ".yml", ".json", ".toml")):
        return False
    try:
        if text.startswith((".", "/", "~")) or "/" in text:
            layout = _parse_layout(text, text)
            return layout.tag is not None or layout.digest is not None or (layout.path / "oci-layout").is_file()
        return bool(NAME_RE.match(_split_version(text, text)[0]))
    except InvalidReferenceError:
        return False


def parse_reference(text: str, *, registry: str | None = None) -> Reference:
    """Parse any reference form; bare names resolve against the default registry.

    Args:
        text: the reference.
        registry: the default registry, as given to `--registry`; None uses
            `$ZOO_REGISTRY` or the cache folder.

    Raises:
        InvalidReferenceError: the text matches no form, or a part of it
            breaks the grammar.
    """
    if not text:
        raise InvalidReferenceError(f"the reference is empty; use {REFERENCE_FORMS}")
    if text.startswith(OCI_SCHEME):
        registry_address, repository, tag, digest = _split_remote(text)
        if not repository:
            raise InvalidReferenceError(
                f"{text!r} names no repository; write oci://{registry_address}/REPOSITORY[:TAG|@sha256:HEX]"
            )
        _check_repository(repository, text)
        return RemoteReference(registry_address, repository, tag, digest)
    if text.startswith(LAYOUT_PREFIX):
        return _parse_layout(text[len(LAYOUT_PREFIX) :], text)
    if text.startswith((".", "/", "~")) or "/" in text:
        return _parse_layout(text, text)
    name, tag, digest = _split_version(text, text)
    if not NAME_RE.match(name):
        raise InvalidReferenceError(f"{text!r} is not a reference; use {REFERENCE_FORMS}")
    return default_registry(registry).reference(name, tag, digest)


def publish_target(target: str | None, *, registry: str | None, name: str, version: str) -> Reference:
    """Return where `zoo publish` puts a checkpoint named `name` at `version`.

    The repository defaults to the manifest's name and the tag to its
    version; `target` may give either, as any reference form, or an
    `oci://HOST[:PORT]` without a repository.

    Raises:
        InvalidReferenceError: the target is invalid, names a digest, or the
            defaults do not form a valid repository name or tag.
    """
    if target is None:
        reference: Reference = _default_repository(default_registry(registry), name)
    elif target.startswith(OCI_SCHEME) and not _split_remote(target)[1]:
        registry_address, _, tag, digest = _split_remote(target)
        _check_name(name, f"{target}/{name}")
        reference = RemoteReference(registry_address, name, tag, digest)
    else:
        reference = parse_reference(target, registry=registry)
    if reference.digest:
        raise InvalidReferenceError(
            f"publish target {target!r} names a digest; the digest is computed from the content, "
            "so give a tag (REFERENCE:TAG) or none to use the manifest's version"
        )
    if reference.tag is None:
        reference = reference.with_version(tag=tag_for_version(version))
    return reference


def _default_repository(root: RegistryRoot, name: str) -> Reference:
    _check_name(name, f"{root}/{name}")
    return root.reference(name)


def _check_name(name: str, where: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidReferenceError(
            f"manifest name {name!r} is not a valid repository name at {where} ({REPOSITORY_RULE}); "
            "give the repository in the target, such as oci://HOST/REPOSITORY or oci-layout:PATH"
        )


def _check_repository(repository: str, text: str) -> None:
    if len(repository) > MAX_REPOSITORY_LENGTH or not REPOSITORY_RE.match(repository):
        raise InvalidReferenceError(f"repository {repository!r} in {text!r} is invalid; repository names use {REPOSITORY_RULE}")


def _check_tag(tag: str, text: str) -> str:
    if not TAG_RE.match(tag):
        raise InvalidReferenceError(f"tag {tag!r} in {text!r} is invalid; tags are {TAG_RULE}")
    return tag


def _check_digest(digest: str, text: str) -> str:
    if DIGEST_RE.match(digest):
        return digest
    algorithm = digest.partition(":")[0]
    if algorithm and algorithm != "sha256" and _ANY_DIGEST_RE.match(digest):
        raise InvalidReferenceError(f"digest algorithm {algorithm!r} in {text!r} is not supported; use sha256:HEX")
    raise InvalidReferenceError(f"digest {digest!r} in {text!r} is invalid; write sha256: followed by 64 lower-case hex digits")


def _split_version(spec: str, text: str) -> tuple[str, str | None, str | None]:
    """Split `NAME[:TAG|@DIGEST]` into its parts and check tag and digest."""
    head, at, digest = spec.partition("@")
    name, colon, tag = head.partition(":")
    if at and colon:
        raise InvalidReferenceError(f"{text!r} gives both a tag and a digest; give one of them")
    return name, _check_tag(tag, text) if colon else None, _check_digest(digest, text) if at else None


def _split_remote(text: str) -> tuple[str, str, str | None, str | None]:
    """Split `oci://REGISTRY[/REPOSITORY][:TAG|@DIGEST]` into registry, repository, tag and digest."""
    rest = text[len(OCI_SCHEME) :]
    registry, _, path = rest.partition("/")
    if "@" in registry:
        if _ANY_DIGEST_RE.match(registry.rpartition("@")[2]):
            raise InvalidReferenceError("a digest needs a repository: write oci://HOST[:PORT]/REPOSITORY@sha256:HEX")
        # The part before '@' may be a user name and password, so the message must not repeat it.
        raise InvalidReferenceError(
            "the registry address of the reference contains '@', as in USER:PASSWORD@HOST; references never "
            "carry credentials. Write oci://HOST[:PORT]/REPOSITORY and set ZOO_REGISTRY_USERNAME and "
            "ZOO_REGISTRY_PASSWORD, or log in with `docker login HOST`"
        )
    match = REGISTRY_RE.match(registry)
    if not match:
        raise InvalidReferenceError(
            f"registry address {registry!r} in {text!r} is invalid; write HOST or HOST:PORT, such as 127.0.0.1:5000 or ghcr.io"
        )
    port = match.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise InvalidReferenceError(f"port {port} in {text!r} is out of range; use 1 to 65535")
    if not path:
        return registry, "", None, None
    repository, tag, digest = _split_version(path, text)
    return registry, repository, tag, digest


def _parse_layout(spec: str, text: str) -> LayoutReference:
    """Parse `PATH[:TAG|@DIGEST]`; the tag is split off only after the last '/'."""
    path, tag, digest = spec, None, None
    head, at, tail = spec.rpartition("@")
    if at and "/" not in tail and _ANY_DIGEST_RE.match(tail):
        path, digest = head, _check_digest(tail, text)
    else:
        folder, slash, last = spec.rpartition("/")
        if ":" in last:
            name, _, tag = last.rpartition(":")
            path = f"{folder}{slash}{name}"
            tag = _check_tag(tag, text)
    if not path:
        raise InvalidReferenceError(f"{text!r} names no folder; write oci-layout:PATH[:TAG|@sha256:HEX]")
    return LayoutReference(Path(os.path.expanduser(path)), tag, digest)
