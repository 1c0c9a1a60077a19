"""Parsing registry references and filling in publish defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from zoo.registry import (
    InvalidReferenceError,
    LayoutReference,
    RemoteReference,
    parse_reference,
)
from zoo.registry.reference import (
    LayoutRoot,
    RemoteRoot,
    default_registry,
    is_loopback,
    looks_like_reference,
    parse_registry,
    publish_target,
    tag_for_version,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci://127.0.0.1:5000/tiny:1.0.0", RemoteReference("127.0.0.1:5000", "tiny", "1.0.0")),
        ("oci://ghcr.io/team/models/tiny", RemoteReference("ghcr.io", "team/models/tiny")),
        (f"oci://localhost:5000/a_b/c-d@{DIGEST}", RemoteReference("localhost:5000", "a_b/c-d", None, DIGEST)),
        ("oci://[::1]:5000/tiny:v1", RemoteReference("[::1]:5000", "tiny", "v1")),
        ("oci-layout:/srv/models/tiny:1.0.0", LayoutReference(Path("/srv/models/tiny"), "1.0.0")),
        (f"oci-layout:relative/dir@{DIGEST}", LayoutReference(Path("relative/dir"), None, DIGEST)),
        ("./layout:2.0", LayoutReference(Path("layout"), "2.0")),
        ("/a:b/layout", LayoutReference(Path("/a:b/layout"))),
        ("/srv/layout", LayoutReference(Path("/srv/layout"))),
    ],
)
def test_parse_reference_forms(text, expected):
    assert parse_reference(text) == expected


def test_reference_text_round_trips():
    for text in ("oci://127.0.0.1:5000/team/tiny:1.0.0", f"oci://ghcr.io/tiny@{DIGEST}", "oci-layout:/srv/tiny:1.0.0"):
        assert str(parse_reference(text)) == text


def test_bare_name_uses_default_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert parse_reference("tiny:1.0.0") == LayoutReference(tmp_path / "zoo" / "registry" / "tiny", "1.0.0")

    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "mine"))
    assert parse_reference("tiny") == LayoutReference(tmp_path / "mine" / "tiny")

    monkeypatch.setenv("ZOO_REGISTRY", "oci://127.0.0.1:5000/team")
    assert parse_reference(f"tiny@{DIGEST}") == RemoteReference("127.0.0.1:5000", "team/tiny", None, DIGEST)

    explicit = parse_reference("tiny:2", registry="oci://localhost:6000")
    assert explicit == RemoteReference("localhost:6000", "tiny", "2")


def test_default_registry_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_registry() == LayoutRoot(tmp_path / "zoo" / "registry")
    monkeypatch.setenv("ZOO_REGISTRY", "oci://127.0.0.1:5000")
    assert default_registry() == RemoteRoot("127.0.0.1:5000")
    assert default_registry(str(tmp_path / "option")) == LayoutRoot(tmp_path / "option")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("oci://127.0.0.1:5000", "names no repository"),
        ("oci://host/Tiny", "repository 'Tiny'"),
        ("oci://host/tiny:bad tag", "tag 'bad tag'"),
        ("oci://host/tiny:-x", "not starting with '.' or '-'"),
        (f"oci://host/tiny:1@{DIGEST}", "both a tag and a digest"),
        ("oci://host/tiny@sha256:abc", "64 lower-case hex digits"),
        ("oci://host/tiny@sha512:" + "a" * 128, "algorithm 'sha512'"),
        ("oci://host:70000/tiny", "port 70000"),
        ("oci://ho_st/tiny", "registry address 'ho_st'"),
        ("Tiny-Model", "is not a reference"),
        ("", "is empty"),
        (f"oci://host:5000@{DIGEST}", "a digest needs a repository"),
    ],
)
def test_invalid_reference_names_problem(text, fragment):
    with pytest.raises(InvalidReferenceError) as error:
        parse_reference(text)
    assert fragment in str(error.value)


def test_credentials_in_reference_not_echoed():
    with pytest.raises(InvalidReferenceError) as error:
        parse_reference("oci://alice:s3cret-pass@127.0.0.1:5000/tiny:1.0.0")
    message = str(error.value)
    assert "s3cret-pass" not in message
    assert "alice" not in message
    assert "ZOO_REGISTRY_USERNAME" in message


def test_publish_target_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    default = publish_target(None, registry=None, name="tiny", version="1.0.0")
    assert default == LayoutReference(tmp_path / "zoo" / "registry" / "tiny", "1.0.0")

    server = publish_target("oci://127.0.0.1:5000", registry=None, name="tiny", version="1.0.0")
    assert server == RemoteReference("127.0.0.1:5000", "tiny", "1.0.0")

    repository = publish_target("oci://127.0.0.1:5000/team/other", registry=None, name="tiny", version="2.0")
    assert repository == RemoteReference("127.0.0.1:5000", "team/other", "2.0")

    tagged = publish_target("./layout:stable", registry=None, name="tiny", version="2.0")
    assert tagged == LayoutReference(Path("layout"), "stable")

    namespaced = publish_target(None, registry="oci://localhost:5000/team", name="tiny", version="3")
    assert namespaced == RemoteReference("localhost:5000", "team/tiny", "3")


def test_publish_target_rejects_digest():
    with pytest.raises(InvalidReferenceError) as error:
        publish_target(f"oci://host/tiny@{DIGEST}", registry=None, name="tiny", version="1.0.0")
    assert "names a digest" in str(error.value)


def test_publish_target_rejects_invalid_name():
    with pytest.raises(InvalidReferenceError) as error:
        publish_target("oci://host", registry=None, name="tiny-", version="1.0.0")
    assert "manifest name 'tiny-'" in str(error.value)
    assert "give the repository in the target" in str(error.value)


def test_tag_for_version_replaces_plus():
    assert tag_for_version("1.0.0") == "1.0.0"
    assert tag_for_version("1.0.0+cpu") == "1.0.0_cpu"


def test_loopback_hosts():
    for host in ("localhost", "127.0.0.1", "127.8.9.10", "::1", "[::1]", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("10.0.0.1", "192.0.2.1", "example.com", "localhost.example.com", "::2"):
        assert not is_loopback(host), host


def test_parse_registry_forms(tmp_path):
    assert parse_registry("oci://127.0.0.1:5000/team/sub") == RemoteRoot("127.0.0.1:5000", "team/sub")
    assert parse_registry(f"oci-layout:{tmp_path}") == LayoutRoot(tmp_path)
    with pytest.raises(InvalidReferenceError, match="has a tag or digest"):
        parse_registry("oci://127.0.0.1:5000/team:1")


def test_looks_like_reference(tmp_path):
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    for text in ("tiny", "tiny:1.0.0", f"tiny@{DIGEST}", "oci://h/x:1", "oci-layout:/x", "./layout:1.0.0", f"/srv/x@{DIGEST}", str(layout)):
        assert looks_like_reference(text), text
    for text in ("tiny.safetensors", "zoo-build/tiny-1.0.0.safetensors", "Tiny", "manifest.yaml", "./folder", "tiny:bad tag"):
        assert not looks_like_reference(text), text
