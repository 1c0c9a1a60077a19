"""A small client for the OCI distribution API (v1.1), on `requests`.

It covers what publishing and pulling a checkpoint needs: manifests by tag or
digest, blob existence checks, monolithic blob uploads streamed from the file,
streamed blob downloads, tag and repository listings, and basic or bearer-token
authentication. The `oras` package is not used because its upload reads
whole files into memory and it serialises manifests itself, which would break
canonical manifest bytes.

Transport rules:

- Plain HTTP is used for loopback hosts; other hosts get HTTPS unless the
  caller passes `insecure=True`. Every URL the registry sends back (redirects,
  upload locations, token realms) is checked against the same rule before any
  connection is made.
- Redirects are followed by hand, at most 5, and the Authorization header is
  sent only to the registry's own host and port.
- Credentials are looked up once, on the first 401 response, and never
  appear in messages: error details from the registry are scrubbed of them.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit

from .artifact import (
    CHUNK_BYTES,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    Descriptor,
    sha256_digest,
)
from .auth import PASSWORD_ENV, USERNAME_ENV, Credentials, find_credentials
from .errors import AuthenticationError, NotFoundError, RegistryError, VerificationError
from .reference import DIGEST_RE, RemoteReference, is_loopback

if TYPE_CHECKING:
    import requests
    from typing_extensions import Self

__all__ = ["Progress", "RemoteStore"]

logger = logging.getLogger(__name__)

# Called with a label, the bytes done and the bytes in total, after each chunk.
Progress = Callable[[str, int, int], None]

MAX_REDIRECTS = 5
CONNECT_TIMEOUT_SECONDS = 10
# Seconds without a byte arriving before a request is abandoned. The value is
# generous because a registry may hash a large blob before it responds to the upload.
READ_TIMEOUT_SECONDS = 300
PAGE_SIZE = 1000
MAX_ERROR_DETAIL = 300
MAX_LIST_PAGES = 1000
ACCEPTED_MANIFESTS = (
    f"{MANIFEST_MEDIA_TYPE}, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"
)
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class _ProgressReader:
    """A file wrapper for a streamed request body that reports progress and counts bytes."""

    def __init__(self, file: Any, size: int, label: str, progress: Progress | None) -> None:
        self.file = file
        self.size = size
        self.label = label
        self.progress = progress
        self.sent = 0

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = -1) -> bytes:
        chunk = self.file.read(amount if amount and amount > 0 else CHUNK_BYTES)
        self.sent += len(chunk)
        if self.progress is not None and chunk:
            self.progress(self.label, self.sent, self.size)
        return chunk


class RemoteStore:
    """One repository on a registry server.

    Attributes:
        reference: the repository (its tag and digest are ignored).
        blob_bytes_sent: blob bytes uploaded through this store, for reports.
    """

    def __init__(self, reference: RemoteReference, *, insecure: bool = False) -> None:
        import requests

        self.reference = reference
        self.insecure = insecure
        self.scheme = "http" if is_loopback(reference.host) or insecure else "https"
        self.base = f"{self.scheme}://{reference.registry}/v2/"
        self.session = requests.Session()
        # Proxies and CA bundles from the environment are applied per request
        # below; trust_env is off so requests never adds .netrc credentials.
        self.session.trust_env = False
        from .. import __version__

        self.session.headers["User-Agent"] = f"zoo/{__version__}"
        self._credentials: Credentials | None = None
        self._credentials_loaded = False
        self._authorization: str | None = None
        self.blob_bytes_sent = 0

    # -- naming -------------------------------------------------------------

    @property
    def location(self) -> str:
        """The repository, as `oci://HOST/REPOSITORY`."""
        return self.reference.repository_reference

    def _url(self, path: str) -> str:
        return f"{self.base}{self.reference.repository}/{path}"

    def close(self) -> None:
        """Close the HTTP connections."""
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport rules ----------------------------------------------------

    def check_url(self, url: str, purpose: str) -> None:
        """Raise RegistryError unless `url` may be contacted: HTTPS, or plain HTTP to loopback or with `insecure`."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme == "https":
            return
        if parts.scheme == "http" and (is_loopback(host) or self.insecure):
            return
        if parts.scheme == "http":
            raise RegistryError(
                f"refusing plain HTTP to {host} for {purpose}: plain HTTP is allowed only for loopback hosts "
                "(localhost, 127.0.0.0/8, ::1). Use an HTTPS registry, or pass --insecure if you trust the network "
                "between you and this registry"
            )
        raise RegistryError(f"{self.reference.registry} sent a {parts.scheme or 'relative'} URL for {purpose}; only http and https are supported")

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme == self.scheme and parts.netloc.lower() == self.reference.registry.lower()

    def _transport_options(self, url: str) -> dict[str, Any]:
        import requests

        host = urlsplit(url).hostname or ""
        proxies = {} if is_loopback(host) else requests.utils.get_environ_proxies(url, no_proxy=None)
        verify: bool | str = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        return {"proxies": proxies, "verify": verify, "timeout": (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)}

    # -- requests -----------------------------------------------------------

    def _send(self, method: str, url: str, headers: dict[str, str], data: Any, stream: bool, operation: str) -> requests.Response:
        import requests

        try:
            return self.session.request(method, url, headers=headers, data=data, stream=stream, allow_redirects=False, **self._transport_options(url))
        except requests.exceptions.SSLError as error:
            raise RegistryError(
                f"{operation} failed: the TLS connection to {urlsplit(url).netloc} failed ({_reason(error)}); if this registry "
                "serves only plain HTTP and you trust the network, pass --insecure"
            ) from None
        except requests.exceptions.Timeout:
            raise RegistryError(
                f"{operation} failed: {urlsplit(url).netloc} did not respond within {CONNECT_TIMEOUT_SECONDS} s to connect "
                f"or {READ_TIMEOUT_SECONDS} s to respond; check that the registry is running and reachable"
            ) from None
        except requests.exceptions.ConnectionError as error:
            raise RegistryError(
                f"{operation} failed: the connection to {urlsplit(url).netloc} failed ({_reason(error)}); check that the "
                "registry is running and the address is right"
            ) from None
        except requests.exceptions.RequestException as error:
            raise RegistryError(f"{operation} failed: {type(error).__name__} ({_reason(error)})") from None

    def request(
        self,
        method: str,
        url: str,
        *,
        operation: str,
        headers: dict[str, str] | None = None,
        data: Any = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send a request with the registry's credentials, following redirects and one authentication challenge.

        A request whose body is a stream is not repeated after a 401; callers
        send a body-less request to the same endpoint first, so the
        credentials are in place.
        """
        replayable = data is None or isinstance(data, bytes)
        authenticated = False
        redirects = 0
        while True:
            self.check_url(url, operation)
            send_headers = dict(headers or {})
            if self._authorization and self._same_origin(url):
                send_headers["Authorization"] = self._authorization
            response = self._send(method, url, send_headers, data, stream, operation)
            if response.is_redirect and method in ("GET", "HEAD") and redirects < MAX_REDIRECTS:
                location = response.headers["Location"]
                response.close()
                url = urljoin(url, location)
                redirects += 1
                continue
            if response.status_code == 401 and replayable and not authenticated:
                challenge = response.headers.get("WWW-Authenticate", "")
                response.close()
                if self._authenticate(challenge, operation):
                    authenticated = True
                    continue
                self._raise_unauthorized(401, operation, "")
            return response

    def _raise_for_status(self, response: requests.Response, operation: str, expected: tuple[int, ...]) -> None:
        if response.status_code in expected:
            return
        detail = self._error_detail(response)
        response.close()
        code = response.status_code
        if code in (401, 403):
            self._raise_unauthorized(code, operation, detail)
        if code == 404:
            raise NotFoundError(f"{operation} failed: {self.reference.registry} responded 404 not found{detail}")
        raise RegistryError(f"{operation} failed: {self.reference.registry} responded with HTTP {code}{detail}")

    def _raise_unauthorized(self, code: int, operation: str, detail: str) -> None:
        registry = self.reference.registry
        if self._credentials is None:
            raise AuthenticationError(
                f"{operation} failed: {registry} requires credentials (HTTP {code}){detail}; set {USERNAME_ENV} and "
                f"{PASSWORD_ENV}, or run `docker login {registry}`"
            )
        if code == 403:
            raise AuthenticationError(
                f"{operation} failed: {registry} denied access (HTTP 403){detail}; the credentials from "
                f"{self._credentials.source} lack permission for {self.reference.repository}"
            )
        raise AuthenticationError(
            f"{operation} failed: {registry} rejected the credentials from {self._credentials.source} (HTTP 401){detail}; "
            "check the user name and password"
        )

    def _error_detail(self, response: requests.Response) -> str:
        """Return the registry's error codes and messages, scrubbed of credentials and shortened."""
        try:
            body = response.json()
            errors = body.get("errors", []) if isinstance(body, dict) else []
            parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors if isinstance(e, dict)]
        except ValueError:
            parts = []
        detail = "; ".join(part for part in parts if part)[:MAX_ERROR_DETAIL]
        return f" ({self._scrub(detail)})" if detail else ""

    def _scrub(self, text: str) -> str:
        secrets = []
        if self._credentials is not None:
            credentials = self._credentials
            secrets += [credentials.password, base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()]
        if self._authorization:
            secrets.append(self._authorization.partition(" ")[2])
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- authentication -----------------------------------------------------

    def _load_credentials(self) -> Credentials | None:
        if not self._credentials_loaded:
            self._credentials = find_credentials(self.reference.registry)
            self._credentials_loaded = True
            if self._credentials is not None:
                logger.debug("using credentials from %s for %s", self._credentials.source, self.reference.registry)
        return self._credentials

    def _authenticate(self, challenge: str, operation: str) -> bool:
        """Respond to a WWW-Authenticate challenge; return whether the request is worth repeating."""
        scheme, _, rest = challenge.strip().partition(" ")
        params = {match.group(1).lower(): match.group(2) if match.group(2) is not None else match.group(3) for match in _CHALLENGE_PARAM.finditer(rest)}
        credentials = self._load_credentials()
        if scheme.lower() == "basic":
            if credentials is None:
                return False
            token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
            header = f"Basic {token}"
        elif scheme.lower() == "bearer" and params.get("realm"):
            header = f"Bearer {self._fetch_token(params, credentials, operation)}"
        else:
            return False
        if header == self._authorization:
            return False
        self._authorization = header
        return True

    def _fetch_token(self, params: dict[str, str], credentials: Credentials | None, operation: str) -> str:
        """Get a bearer token from the challenge's realm, with basic credentials when there are any."""
        import requests

        realm = params["realm"]
        self.check_url(realm, f"the token request of {operation}")
        query = {key: params[key] for key in ("service", "scope") if params.get(key)}
        auth = (credentials.username, credentials.password) if credentials else None
        token_server = urlsplit(realm).netloc
        try:
            response = self.session.get(realm, params=query, auth=auth, allow_redirects=False, **self._transport_options(realm))
        except requests.exceptions.RequestException as error:
            raise RegistryError(f"{operation} failed: the token server {token_server} could not be reached ({_reason(error)})") from None
        if response.status_code in (401, 403):
            source = f"the credentials from {credentials.source}" if credentials else "anonymous access"
            fix = "check the user name and password" if credentials else f"set {USERNAME_ENV} and {PASSWORD_ENV}, or run `docker login {self.reference.registry}`"
            raise AuthenticationError(f"{operation} failed: the token server {token_server} rejected {source} (HTTP {response.status_code}); {fix}")
        if response.status_code != 200:
            raise RegistryError(f"{operation} failed: the token server {token_server} responded with HTTP {response.status_code}")
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{operation} failed: the token server {token_server} returned no token")
        return token

    # -- manifests ----------------------------------------------------------

    def fetch_manifest(self, tag_or_digest: str) -> tuple[bytes, str]:
        """Download a manifest and return its bytes and verified digest.

        A digest reference is checked against the bytes; for a tag, the
        registry's Docker-Content-Digest header, when present, must match.

        Raises:
            NotFoundError: the repository or the tag or digest does not exist.
            VerificationError: the bytes do not match the digest.
        """
        artifact_text = f"{self.location}{'@' if DIGEST_RE.match(tag_or_digest) else ':'}{tag_or_digest}"
        operation = f"fetching the manifest of {artifact_text}"
        response = self.request("GET", self._url(f"manifests/{tag_or_digest}"), operation=operation, headers={"Accept": ACCEPTED_MANIFESTS}, stream=True)
        try:
            self._raise_for_status(response, operation, (200,))
        except NotFoundError as error:
            raise NotFoundError(f"{error}; {self._listing_hint()}") from None
        with contextlib.closing(response):
            body = bytearray()
            for chunk in response.iter_content(CHUNK_BYTES):
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise VerificationError(f"the manifest of {artifact_text} is larger than {MAX_MANIFEST_BYTES} bytes; it is not a zoo artifact")
        data = bytes(body)
        digest = sha256_digest(data)
        if DIGEST_RE.match(tag_or_digest) and digest != tag_or_digest:
            raise VerificationError(f"the manifest of {artifact_text} has sha256 {digest}; the registry returned other content than the digest names")
        announced = response.headers.get("Docker-Content-Digest", "")
        if announced.startswith("sha256:") and announced != digest:
            raise VerificationError(f"the manifest of {artifact_text} has sha256 {digest}, but the registry announced {announced}; the content was changed in transit or in storage")
        return data, digest

    def resolve_tag(self, tag: str) -> tuple[bytes, str] | None:
        """Return the manifest a tag points to and its digest, or None when the tag or repository does not exist."""
        try:
            return self.fetch_manifest(tag)
        except NotFoundError:
            return None

    def put_manifest(self, data: bytes, digest: str, tag: str, artifact_type: str | None = None) -> None:
        """Upload a manifest under `tag`; the registry must store it with digest `digest`.

        `artifact_type` is unused: a registry reads it from the manifest itself.
        """
        operation = f"tagging {self.location}:{tag}"
        response = self.request("PUT", self._url(f"manifests/{tag}"), operation=operation, headers={"Content-Type": MANIFEST_MEDIA_TYPE}, data=data)
        self._raise_for_status(response, operation, (201,))
        announced = response.headers.get("Docker-Content-Digest", "")
        response.close()
        if announced.startswith("sha256:") and announced != digest:
            raise VerificationError(f"{self.location} stored the manifest as {announced} instead of {digest}; the registry altered the manifest")

    # -- blobs --------------------------------------------------------------

    def blob_size(self, digest: str) -> int | None:
        """Return the size of a blob in the repository, or None when the registry lacks it."""
        operation = f"checking blob {digest} in {self.location}"
        response = self.request("HEAD", self._url(f"blobs/{digest}"), operation=operation)
        if response.status_code == 404:
            response.close()
            return None
        self._raise_for_status(response, operation, (200,))
        response.close()
        length = response.headers.get("Content-Length")
        return int(length) if length and length.isdigit() else None

    def upload_blob(self, descriptor: Descriptor, source: Path | bytes, label: str, progress: Progress | None = None) -> None:
        """Upload one blob in a single PUT, streamed from `source`; the registry verifies the digest.

        Raises:
            VerificationError: the registry computed another digest, so the
                file changed after it was hashed.
            RegistryError: the upload failed.
        """
        operation = f"uploading {label} ({descriptor.digest}, {descriptor.size} bytes) to {self.location}"
        start_url = self._url("blobs/uploads/")
        response = self.request("POST", start_url, operation=operation, headers={"Content-Length": "0"}, data=b"")
        self._raise_for_status(response, operation, (202,))
        location = response.headers.get("Location")
        response.close()
        if not location:
            raise RegistryError(f"{operation} failed: {self.reference.registry} started an upload without a Location header")
        upload_url = urljoin(start_url, location)
        upload_url += ("&" if "?" in upload_url else "?") + urlencode({"digest": descriptor.digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(descriptor.size)}
        if isinstance(source, bytes):
            response = self.request("PUT", upload_url, operation=operation, headers=headers, data=source)
            if progress is not None:
                progress(label, len(source), len(source))
        else:
            with source.open("rb") as file:
                response = self.request("PUT", upload_url, operation=operation, headers=headers, data=_ProgressReader(file, descriptor.size, label, progress))
        if response.status_code == 400 and "DIGEST_INVALID" in self._error_detail(response):
            raise VerificationError(f"{operation} failed: the registry computed another digest; the file changed after it was hashed, so publish it again")
        self._raise_for_status(response, operation, (201,))
        response.close()
        self.blob_bytes_sent += descriptor.size

    @contextlib.contextmanager
    def open_blob(self, descriptor: Descriptor, label: str) -> Iterator[Iterator[bytes]]:
        """Stream a blob's bytes as they arrive; the caller verifies them."""
        operation = f"downloading {label} ({descriptor.digest}) from {self.location}"
        response = self.request("GET", self._url(f"blobs/{descriptor.digest}"), operation=operation, headers={"Accept-Encoding": "identity"}, stream=True)
        self._raise_for_status(response, operation, (200,))
        with contextlib.closing(response):
            yield self._chunks(response, operation)

    def _chunks(self, response: requests.Response, operation: str) -> Iterator[bytes]:
        import requests

        try:
            yield from response.iter_content(CHUNK_BYTES)
        except requests.exceptions.RequestException as error:
            raise RegistryError(f"{operation} failed: the connection broke ({_reason(error)}); run the command again") from None

    # -- listings -----------------------------------------------------------

    def _paginate(self, url: str, key: str, operation: str) -> list[str]:
        items: list[str] = []
        for _ in range(MAX_LIST_PAGES):
            response = self.request("GET", url, operation=operation)
            self._raise_for_status(response, operation, (200,))
            try:
                page = response.json().get(key) or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{operation} failed: {self.reference.registry} returned no JSON object") from None
            items += [item for item in page if isinstance(item, str)]
            link = _NEXT_LINK.search(response.headers.get("Link", ""))
            response.close()
            if not link:
                return items
            url = urljoin(url, link.group(1))
        raise RegistryError(f"{operation} failed: more than {MAX_LIST_PAGES} pages")

    def _listing_hint(self) -> str:
        """Name the `zoo list` command that shows what exists, after a manifest was not found."""
        # distribution 2.8 returns MANIFEST_UNKNOWN for a missing repository too, so ask for its tags.
        try:
            self.tags()
        except NotFoundError:
            return f"the repository does not exist; `zoo list oci://{self.reference.registry}` shows the repositories"
        except RegistryError:
            pass
        return f"`zoo list {self.location}` shows the tags it has"

    def tags(self) -> list[str]:
        """Return the repository's tags, sorted.

        Raises:
            NotFoundError: the repository does not exist.
        """
        return sorted(self._paginate(self._url(f"tags/list?n={PAGE_SIZE}"), "tags", f"listing the tags of {self.location}"))

    def repositories(self) -> list[str]:
        """Return every repository of the registry (its catalog), sorted."""
        url = f"{self.base}_catalog?n={PAGE_SIZE}"
        return sorted(self._paginate(url, "repositories", f"listing the repositories of oci://{self.reference.registry}"))


def _reason(error: BaseException) -> str:
    """Return the innermost OS error message of a requests exception, such as 'Connection refused'."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
        for linked in (current.__cause__, current.__context__, getattr(current, "reason", None)):
            if isinstance(linked, BaseException):
                pending.append(linked)
    return type(error).__name__
