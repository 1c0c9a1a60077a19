"""Publish and pull against a registry with htpasswd basic authentication."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from zoo.registry import AuthenticationError, RegistryError, list_tags, publish, pull

pytestmark = pytest.mark.registry

USERNAME = "zoo-user"
PASSWORD = "correct-horse-battery-8"


def basic_auth_value(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def write_docker_config(folder: Path, config: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))


SECRETS = (PASSWORD, basic_auth_value(USERNAME, PASSWORD))


@pytest.fixture
def server(auth_registry_server):
    return auth_registry_server(USERNAME, PASSWORD)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_no_credentials_explains_fix(server, checkpoint):
    with pytest.raises(AuthenticationError) as error:
        publish(checkpoint(), f"oci://{server.address}")
    message = str(error.value)
    assert "requires credentials" in message
    assert "ZOO_REGISTRY_USERNAME" in message
    assert f"docker login {server.address}" in message


def test_credentials_from_environment(server, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_REGISTRY_USERNAME", USERNAME)
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", PASSWORD)
    source = checkpoint()
    result = publish(source, f"oci://{server.address}")
    assert pull(str(result.digest_reference), tmp_path / "out").path.read_bytes() == source.read_bytes()


def test_credentials_from_docker_config_auth(server, checkpoint, tmp_path):
    write_docker_config(tmp_path / "docker-config", {"auths": {server.address: {"auth": basic_auth_value(USERNAME, PASSWORD)}}})
    source = checkpoint()
    publish(source, f"oci://{server.address}")
    assert [info.tag for info in list_tags(server.url("tiny"))] == ["1.0.0"]


def test_credentials_from_docker_config_fields(server, checkpoint, tmp_path):
    entry = {"username": USERNAME, "password": PASSWORD}
    write_docker_config(tmp_path / "docker-config", {"auths": {f"http://{server.address}/v2/": entry}})
    publish(checkpoint(), f"oci://{server.address}")
    assert pull(server.url("tiny", "1.0.0"), tmp_path / "out").downloaded


def test_credentials_from_helper(server, checkpoint, tmp_path, monkeypatch):
    helpers = tmp_path / "bin"
    helpers.mkdir()
    helper = helpers / "docker-credential-zoo-test"
    answer = json.dumps({"ServerURL": server.address, "Username": USERNAME, "Secret": PASSWORD})
    helper.write_text(
        "#!/bin/sh\n"
        'read server\n'
        f'if [ "$1" = get ] && [ "$server" = "{server.address}" ]; then\n'
        f"  echo '{answer}'\n"
        "else\n"
        "  echo 'credentials not found in native keychain'\n"
        "  exit 1\n"
        "fi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{helpers}{os.pathsep}{os.environ['PATH']}")
    write_docker_config(tmp_path / "docker-config", {"credHelpers": {server.address: "zoo-test"}})

    publish(checkpoint(), f"oci://{server.address}")
    assert [info.tag for info in list_tags(server.url("tiny"))] == ["1.0.0"]


def test_wrong_password_rejected_without_leak(server, checkpoint, monkeypatch, caplog):
    wrong = "wrong-password-42"
    monkeypatch.setenv("ZOO_REGISTRY_USERNAME", USERNAME)
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", wrong)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(AuthenticationError) as error:
        publish(checkpoint(), f"oci://{server.address}")
    message = str(error.value)
    assert "rejected the credentials from ZOO_REGISTRY_USERNAME/ZOO_REGISTRY_PASSWORD" in message
    for secret in (wrong, basic_auth_value(USERNAME, wrong)):
        assert secret not in message
        assert secret not in caplog.text


def test_errors_and_logs_carry_no_credentials(server, checkpoint, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ZOO_REGISTRY_USERNAME", USERNAME)
    monkeypatch.setenv("ZOO_REGISTRY_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    source = checkpoint()
    publish(source, f"oci://{server.address}")
    messages = []
    failing_calls = [
        lambda: publish(checkpoint(seed=5), f"oci://{server.address}"),
        lambda: pull(server.url("tiny", "9.9.9"), tmp_path / "out"),
        lambda: pull(server.url("missing", "1.0.0"), tmp_path / "out"),
    ]
    for call in failing_calls:
        with pytest.raises(RegistryError) as error:
            call()
        messages.append(str(error.value))
    server.stop()
    with pytest.raises(RegistryError) as error:
        pull(server.url("tiny", "1.0.0"), tmp_path / "out")
    messages.append(str(error.value))

    assert len(messages) == 4
    for message in messages:
        assert_no_secret(message)
    assert_no_secret(caplog.text)


def test_cli_output_carries_no_credentials(server, checkpoint, tmp_path):
    environment = {**os.environ, "ZOO_REGISTRY_USERNAME": USERNAME, "ZOO_REGISTRY_PASSWORD": PASSWORD, "COLUMNS": "250"}
    source = checkpoint()

    def zoo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=300, check=False)

    published = zoo("publish", str(source), f"oci://{server.address}")
    assert published.returncode == 0, published.stderr
    missing = zoo("pull", server.url("tiny", "2.0.0"))
    assert missing.returncode == 1
    assert "not found" in missing.stderr
    environment["ZOO_REGISTRY_PASSWORD"] = "wrong-password-42"
    rejected = zoo("inspect", server.url("tiny", "1.0.0"))
    assert rejected.returncode == 1
    assert "rejected the credentials" in rejected.stderr

    for completed in (published, missing, rejected):
        assert_no_secret(completed.stdout + completed.stderr)
        assert "wrong-password-42" not in completed.stdout + completed.stderr
    assert published.stdout.strip().startswith(f"oci://{server.address}/tiny@sha256:")
