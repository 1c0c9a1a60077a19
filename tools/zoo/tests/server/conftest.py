"""A real OCI registry for the tests: Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1.

Each server gets a free port, a temporary storage folder and a config file
written here; it is stopped by its process id. Tests that need it are marked
`registry` and skip only when the `docker-registry` binary is missing. The
checkpoints they publish come from the fixtures in the parent folder's conftest.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REGISTRY_BINARY = shutil.which("docker-registry")
START_TIMEOUT_SECONDS = 20


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if REGISTRY_BINARY is not None:
        return
    skip = pytest.mark.skip(reason="docker-registry is not installed; install it with `apt-get install -y docker-registry`")
    for item in items:
        if item.get_closest_marker("registry") is not None:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RegistryServer:
    """One docker-registry process; `stop` and `start` keep port and storage, as a restart does."""

    def __init__(self, folder: Path, htpasswd: Path | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.storage = folder / "storage"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = folder / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.config = folder / "config.yml"
        auth = f"auth:\n  htpasswd:\n    realm: zoo-tests\n    path: {htpasswd}\n" if htpasswd else ""
        self.config.write_text(
            "version: 0.1\n"
            "log:\n  level: info\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.address}\n  secret: zoo-tests-upload-secret\n" + auth
        )

    def start(self) -> None:
        assert REGISTRY_BINARY is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([REGISTRY_BINARY, "serve", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited with status {self.process.returncode}; see {self.log}")
            try:
                # An empty ProxyHandler keeps proxy settings from the environment away from loopback.
                urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"http://{self.address}/v2/", timeout=1).close()
                return
            except urllib.error.HTTPError as error:
                if error.code == 401:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer on {self.address} within {START_TIMEOUT_SECONDS} s; see {self.log}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def blob_file(self, digest: str) -> Path:
        """Return where the server stores a blob (distribution's filesystem driver layout)."""
        hex_digest = digest.partition(":")[2]
        return self.storage / "docker" / "registry" / "v2" / "blobs" / "sha256" / hex_digest[:2] / hex_digest / "data"

    def access_log(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, repository: str, tag_or_digest: str | None = None) -> str:
        suffix = "" if tag_or_digest is None else ("@" if tag_or_digest.startswith("sha256:") else ":") + tag_or_digest
        return f"oci://{self.address}/{repository}{suffix}"


@pytest.fixture
def registry_server(tmp_path: Path) -> Iterator[RegistryServer]:
    """A running registry without authentication."""
    server = RegistryServer(tmp_path / "registry")
    server.start()
    yield server
    server.stop()


def write_htpasswd(path: Path, username: str, password: str) -> None:
    """Write a bcrypt htpasswd file, the only hash format the registry accepts."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd is not None:
        subprocess.run([htpasswd, "-Bbc", str(path), username, password], check=True, capture_output=True)
        return
    try:
        import bcrypt
    except ImportError:
        pytest.fail("creating the htpasswd file needs `htpasswd` (apt-get install -y apache2-utils) or the Python package bcrypt")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
    path.write_text(f"{username}:{hashed}\n")


@pytest.fixture
def auth_registry_server(tmp_path: Path) -> Iterator[Callable[[str, str], RegistryServer]]:
    """Start registries that require one user name and password through htpasswd basic authentication."""
    servers: list[RegistryServer] = []

    def start(username: str, password: str) -> RegistryServer:
        folder = tmp_path / f"auth-registry-{len(servers)}"
        folder.mkdir()
        write_htpasswd(folder / "htpasswd", username, password)
        server = RegistryServer(folder, folder / "htpasswd")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
