"""Finding registry credentials in environment variables and the Docker configuration."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from zoo.registry import AuthenticationError
from zoo.registry.auth import Credentials, docker_config_path, find_credentials

REGISTRY = "127.0.0.1:5000"


def encode(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.fixture
def docker_config(tmp_path: Path):
    def write(config: dict) -> Path:
        path = docker_config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config))
        return path

    return write


@pytest.fixture
def helper_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a docker-credential-NAME program that returns credentials for one server."""

    def install(name: str, server: str, username: str, secret: str) -> None:
        folder = tmp_path / "helpers"
        folder.mkdir(exist_ok=True)
        program = folder / f"docker-credential-{name}"
        answer = json.dumps({"ServerURL": server, "Username": username, "Secret": secret})
        program.write_text(
            "#!/bin/sh\nread server\n"
            f'if [ "$1" = get ] && [ "$server" = "{server}" ]; then echo \'{answer}\'; exit 0; fi\n'
            "echo 'credentials not found in native keychain'; exit 1\n"
        )
        program.chmod(program.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    return install


def test_none_without_any_source():
    assert find_credentials(REGISTRY) is None


def test_environment_wins(monkeypatch, docker_config):
    docker_config({"auths": {REGISTRY: {"auth": encode("docker", "from-config")}}})
    monkeypatch.setenv("ZOO_REGISTRY_USERNAME", "env-user")
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", "env-pass")
    found = find_credentials(REGISTRY)
    assert (found.username, found.password) == ("env-user", "env-pass")
    assert found.source == "ZOO_REGISTRY_USERNAME/ZOO_REGISTRY_PASSWORD"


def test_environment_needs_both(monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", "lonely-secret")
    with pytest.raises(AuthenticationError) as error:
        find_credentials(REGISTRY)
    assert "ZOO_REGISTRY_USERNAME is empty or unset" in str(error.value)
    assert "lonely-secret" not in str(error.value)


@pytest.mark.parametrize("key", [REGISTRY, f"https://{REGISTRY}", f"http://{REGISTRY}/v2/"])
def test_docker_config_auth_keys(docker_config, key):
    docker_config({"auths": {key: {"auth": encode("alice", "pa:ss")}}})
    found = find_credentials(REGISTRY)
    assert (found.username, found.password) == ("alice", "pa:ss")


def test_docker_config_username_password(docker_config):
    path = docker_config({"auths": {REGISTRY: {"username": "bob", "password": "hunter2"}}})
    found = find_credentials(REGISTRY)
    assert (found.username, found.password) == ("bob", "hunter2")
    assert str(path) in found.source


def test_docker_config_other_registry_ignored(docker_config):
    docker_config({"auths": {"ghcr.io": {"auth": encode("alice", "secret")}}})
    assert find_credentials(REGISTRY) is None


def test_docker_hub_key(docker_config):
    docker_config({"auths": {"https://index.docker.io/v1/": {"auth": encode("hubuser", "hubpass")}}})
    for registry in ("docker.io", "registry-1.docker.io"):
        assert find_credentials(registry).username == "hubuser"


def test_bad_auth_value_hides_it(docker_config):
    docker_config({"auths": {REGISTRY: {"auth": "not base64 !!"}}})
    with pytest.raises(AuthenticationError) as error:
        find_credentials(REGISTRY)
    assert "not base64 of USER:PASSWORD" in str(error.value)
    assert "not base64 !!" not in str(error.value)


def test_unreadable_config_reported(docker_config):
    path = docker_config({})
    path.write_text("{broken")
    with pytest.raises(AuthenticationError, match="cannot read the Docker configuration"):
        find_credentials(REGISTRY)


def test_credential_helper_for_registry(docker_config, helper_on_path):
    helper_on_path("zoo-test", REGISTRY, "helper-user", "helper-secret")
    docker_config({"credHelpers": {REGISTRY: "zoo-test"}, "auths": {REGISTRY: {"auth": encode("x", "y")}}})
    found = find_credentials(REGISTRY)
    assert (found.username, found.password) == ("helper-user", "helper-secret")
    assert found.source == "docker-credential-zoo-test"


def test_credential_store_fallback(docker_config, helper_on_path):
    helper_on_path("zoo-store", REGISTRY, "store-user", "store-secret")
    docker_config({"credsStore": "zoo-store"})
    assert find_credentials(REGISTRY).username == "store-user"
    assert find_credentials("other.example.com:5000") is None


def test_missing_helper_reported(docker_config):
    docker_config({"credHelpers": {REGISTRY: "absent-helper"}})
    with pytest.raises(AuthenticationError, match="docker-credential-absent-helper is not on PATH"):
        find_credentials(REGISTRY)


def test_credentials_repr_hides_password():
    text = repr(Credentials("alice", "repr-secret", "test"))
    assert "alice" in text
    assert "repr-secret" not in text
