"""Transport rules of the registry client: plain HTTP only to loopback, token authentication, redirects.

A small scripted HTTP server on 127.0.0.1 plays the registry and token
server. Addresses in 192.0.2.0/24 (TEST-NET-1) stand for hosts that are not
loopback; a guard fails the test if the client ever tries to connect to one.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from zoo.registry import AuthenticationError, RegistryError, RemoteReference, list_tags
from zoo.registry.artifact import Descriptor
from zoo.registry.reference import is_loopback
from zoo.registry.remote import RemoteStore

NOT_LOOPBACK = "192.0.2.1"
DIGEST = "sha256:" + "c" * 64


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


Response = tuple[int, dict[str, str], bytes]


@dataclass
class ScriptedServer:
    """An HTTP server on 127.0.0.1 that records each request and responds with `answer(request)`."""

    answer: Callable[[Recorded], Response]
    requests: list[Recorded] = field(default_factory=list)
    address: str = ""


@pytest.fixture
def scripted_server() -> Iterator[Callable[[Callable[[Recorded], Response]], ScriptedServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Callable[[Recorded], Response]) -> ScriptedServer:
        scripted = ScriptedServer(answer)

        class Handler(BaseHTTPRequestHandler):
            def _respond(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                request = Recorded(self.command, parts.path, parse_qs(parts.query), {k.lower(): v for k, v in self.headers.items()})
                scripted.requests.append(request)
                status, headers, body = scripted.answer(request)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = _respond

            def log_message(self, format: str, *args: object) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        scripted.address = f"127.0.0.1:{server.server_address[1]}"
        return scripted

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail any connection attempt to a host that is not loopback, before a packet leaves."""
    import urllib3.util.connection

    attempted: list[str] = []
    original = urllib3.util.connection.create_connection

    def guarded(address, *args, **kwargs):
        host = address[0]
        if not is_loopback(host):
            attempted.append(host)
            raise AssertionError(f"the client tried to connect to {host}, which is not loopback")
        return original(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", guarded)
    return attempted


def _json(data: object) -> bytes:
    return json.dumps(data).encode()


def test_scheme_follows_host_and_insecure():
    assert RemoteStore(RemoteReference("127.0.0.1:5000", "x")).base == "http://127.0.0.1:5000/v2/"
    assert RemoteStore(RemoteReference("localhost", "x")).base == "http://localhost/v2/"
    assert RemoteStore(RemoteReference("[::1]:5000", "x")).base == "http://[::1]:5000/v2/"
    assert RemoteStore(RemoteReference("registry.example.com", "x")).base == "https://registry.example.com/v2/"
    assert RemoteStore(RemoteReference(f"{NOT_LOOPBACK}:5000", "x")).base == f"https://{NOT_LOOPBACK}:5000/v2/"
    assert RemoteStore(RemoteReference(f"{NOT_LOOPBACK}:5000", "x"), insecure=True).base == f"http://{NOT_LOOPBACK}:5000/v2/"


def test_plain_http_to_other_hosts_needs_insecure():
    store = RemoteStore(RemoteReference("registry.example.com", "x"))
    with pytest.raises(RegistryError) as error:
        store.check_url(f"http://{NOT_LOOPBACK}/v2/", "a test request")
    message = str(error.value)
    assert f"refusing plain HTTP to {NOT_LOOPBACK}" in message
    assert "--insecure" in message
    store.check_url("https://registry.example.com/v2/", "a test request")
    store.check_url("http://127.0.0.1:5000/v2/", "a test request")
    RemoteStore(RemoteReference("registry.example.com", "x"), insecure=True).check_url(f"http://{NOT_LOOPBACK}/v2/", "a test request")
    with pytest.raises(RegistryError, match="only http and https"):
        store.check_url("ftp://registry.example.com/blob", "a test request")


def test_bearer_token_flow(scripted_server, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", "token-flow-secret")

    def answer(request: Recorded) -> Response:
        if request.path == "/token":
            expected = "Basic " + base64.b64encode(b"alice:token-flow-secret").decode()
            if request.headers.get("authorization") != expected:
                return 401, {}, b""
            return 200, {"Content-Type": "application/json"}, _json({"token": "issued-token"})
        if request.headers.get("authorization") != "Bearer issued-token":
            challenge = f'Bearer realm="http://{server.address}/token",service="scripted",scope="repository:team/x:pull"'
            return 401, {"WWW-Authenticate": challenge}, b""
        return 200, {"Content-Type": "application/json"}, _json({"name": "team/x", "tags": ["2.0", "1.0"]})

    server = scripted_server(answer)
    with RemoteStore(RemoteReference(server.address, "team/x")) as store:
        assert store.tags() == ["1.0", "2.0"]
    token_request = next(r for r in server.requests if r.path == "/token")
    assert token_request.query == {"service": ["scripted"], "scope": ["repository:team/x:pull"]}
    assert [r.path for r in server.requests] == ["/v2/team/x/tags/list", "/token", "/v2/team/x/tags/list"]


def test_bearer_token_refused_shows_fix(scripted_server):
    def answer(request: Recorded) -> Response:
        if request.path == "/token":
            return 401, {}, b""
        challenge = f'Bearer realm="http://{server.address}/token",service="scripted"'
        return 401, {"WWW-Authenticate": challenge}, b""

    server = scripted_server(answer)
    with pytest.raises(AuthenticationError) as error:
        list_tags(f"oci://{server.address}/x")
    assert "rejected anonymous access" in str(error.value)
    assert "ZOO_REGISTRY_USERNAME" in str(error.value)


def test_token_realm_over_plain_http_refused(scripted_server, loopback_only, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", "never-sent-secret")

    def answer(request: Recorded) -> Response:
        challenge = f'Bearer realm="http://{NOT_LOOPBACK}/token",service="scripted"'
        return 401, {"WWW-Authenticate": challenge}, b""

    server = scripted_server(answer)
    with pytest.raises(RegistryError) as error:
        list_tags(f"oci://{server.address}/x")
    assert f"refusing plain HTTP to {NOT_LOOPBACK}" in str(error.value)
    assert "never-sent-secret" not in str(error.value)
    assert loopback_only == []


def test_redirect_to_plain_http_host_refused(scripted_server, loopback_only):
    server = scripted_server(lambda request: (307, {"Location": f"http://{NOT_LOOPBACK}/blob"}, b""))
    store = RemoteStore(RemoteReference(server.address, "x"))
    with (
        pytest.raises(RegistryError, match=f"refusing plain HTTP to {NOT_LOOPBACK}"),
        store.open_blob(Descriptor("application/octet-stream", DIGEST, 4), "a blob"),
    ):
        pass
    assert loopback_only == []


def test_upload_location_on_plain_http_host_refused(scripted_server, loopback_only):
    def answer(request: Recorded) -> Response:
        if request.method == "POST":
            return 202, {"Location": f"http://{NOT_LOOPBACK}/upload/1"}, b""
        return 404, {}, b""

    server = scripted_server(answer)
    store = RemoteStore(RemoteReference(server.address, "x"))
    with pytest.raises(RegistryError, match=f"refusing plain HTTP to {NOT_LOOPBACK}"):
        store.upload_blob(Descriptor("application/octet-stream", DIGEST, 4), b"data", "a blob")
    assert loopback_only == []


def test_redirect_drops_credentials_for_other_origin(scripted_server, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", "stay-home-secret")
    storage = scripted_server(lambda request: (200, {}, b"data"))

    def answer(request: Recorded) -> Response:
        if "authorization" not in request.headers:
            return 401, {"WWW-Authenticate": 'Basic realm="scripted"'}, b""
        return 307, {"Location": f"http://{storage.address}/blob"}, b""

    registry = scripted_server(answer)
    with (
        RemoteStore(RemoteReference(registry.address, "x")) as store,
        store.open_blob(Descriptor("application/octet-stream", DIGEST, 4), "a blob") as chunks,
    ):
        assert b"".join(chunks) == b"data"
    assert registry.requests[-1].headers["authorization"].startswith("Basic ")
    assert [r.headers.get("authorization") for r in storage.requests] == [None]


def test_registry_error_detail_is_reported(scripted_server):
    body = _json({"errors": [{"code": "DENIED", "message": "quota exceeded"}]})
    server = scripted_server(lambda request: (429, {"Content-Type": "application/json"}, body))
    with pytest.raises(RegistryError) as error:
        list_tags(f"oci://{server.address}/x")
    assert "HTTP 429 (DENIED: quota exceeded)" in str(error.value)


def test_manifest_digest_mismatch_refused(scripted_server):
    manifest = b'{"schemaVersion":2}'
    server = scripted_server(lambda request: (200, {"Docker-Content-Digest": DIGEST}, manifest))
    with RemoteStore(RemoteReference(server.address, "x")) as store:
        with pytest.raises(RegistryError, match="the registry announced"):
            store.fetch_manifest("1.0")
        with pytest.raises(RegistryError, match="returned other content than the digest names"):
            store.fetch_manifest(DIGEST)
