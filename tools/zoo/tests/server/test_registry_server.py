"""Publish and pull against a real registry server on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import zoo
from zoo.registry import (
    NotFoundError,
    RegistryError,
    RemoteReference,
    TagConflictError,
    VerificationError,
    inspect_artifact,
    list_repositories,
    list_tags,
    publish,
    pull,
)
from zoo.registry.reference import RemoteRoot
from zoo.registry.remote import RemoteStore

pytestmark = pytest.mark.registry


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def zoo_command(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    environment = {**os.environ, "COLUMNS": "250", **(env or {})}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300, check=False)


def test_publish_pull_by_tag_and_digest(registry_server, checkpoint, tmp_path):
    source = checkpoint()
    result = publish(source, f"oci://{registry_server.address}")
    assert result.reference == RemoteReference(registry_server.address, "tiny", "1.0.0")
    assert str(result.digest_reference) == registry_server.url("tiny", result.digest)
    assert (result.uploaded_blobs, result.present_blobs) == (2, 0)

    by_tag = pull(registry_server.url("tiny", "1.0.0"), tmp_path / "by-tag")
    assert by_tag.path.read_bytes() == source.read_bytes()
    assert by_tag.digest_reference == result.digest_reference

    by_digest = pull(str(result.digest_reference), tmp_path / "by-digest")
    assert by_digest.path.read_bytes() == source.read_bytes()

    loaded = zoo.load(registry_server.url("tiny", "1.0.0"))
    assert loaded.manifest.name == "tiny"


def test_layout_and_server_digests_identical(registry_server, checkpoint, tmp_path):
    source = checkpoint()
    on_server = publish(source, registry_server.url("team/tiny"))
    in_layout = publish(source, str(tmp_path / "layout"))
    assert on_server.digest == in_layout.digest

    with RemoteStore(on_server.reference) as store:
        server_bytes, _ = store.fetch_manifest(on_server.digest)
    layout_bytes = (tmp_path / "layout" / "blobs" / "sha256" / in_layout.digest.partition(":")[2]).read_bytes()
    assert server_bytes == layout_bytes


def test_republish_sends_no_blob_bytes(registry_server, checkpoint):
    source = checkpoint()
    first = publish(source, f"oci://{registry_server.address}")
    config_size = inspect_artifact(str(first.digest_reference)).artifact.config.size
    assert first.uploaded_bytes == source.stat().st_size + config_size

    second = publish(source, f"oci://{registry_server.address}")
    assert second.unchanged
    assert second.uploaded_bytes == 0
    assert (second.uploaded_blobs, second.present_blobs) == (0, 2)
    assert registry_server.access_log().count('"PUT /v2/tiny/blobs/uploads/') == 2


def test_same_blobs_other_tag_upload_only_manifest(registry_server, checkpoint):
    source = checkpoint()
    publish(source, f"oci://{registry_server.address}")
    stable = publish(source, registry_server.url("tiny", "stable"))
    assert stable.uploaded_bytes == 0
    assert [info.tag for info in list_tags(registry_server.url("tiny"))] == ["1.0.0", "stable"]


def test_tag_move_refused_without_force(registry_server, checkpoint, tmp_path):
    original = checkpoint()
    first = publish(original, f"oci://{registry_server.address}")
    other = checkpoint(seed=11)

    with pytest.raises(TagConflictError) as error:
        publish(other, f"oci://{registry_server.address}")
    assert first.digest in str(error.value)
    assert "--force" in str(error.value)
    assert pull(registry_server.url("tiny", "1.0.0"), tmp_path / "kept").path.read_bytes() == original.read_bytes()

    moved = publish(other, f"oci://{registry_server.address}", force=True)
    assert moved.previous_digest == first.digest
    assert pull(registry_server.url("tiny", "1.0.0"), tmp_path / "moved").path.read_bytes() == other.read_bytes()
    assert pull(registry_server.url("tiny", first.digest), tmp_path / "old").path.read_bytes() == original.read_bytes()


def test_tampered_blob_in_storage_refused(registry_server, checkpoint, tmp_path):
    source = checkpoint()
    result = publish(source, f"oci://{registry_server.address}")
    info = inspect_artifact(str(result.digest_reference))
    stored = registry_server.blob_file(info.artifact.layer.digest)
    data = bytearray(stored.read_bytes())
    assert bytes(data) == source.read_bytes()
    data[1000] ^= 0x01
    stored.write_bytes(bytes(data))
    out = tmp_path / "out"

    with pytest.raises(VerificationError) as error:
        pull(registry_server.url("tiny", "1.0.0"), out)
    assert "failed verification" in str(error.value)
    assert info.artifact.layer.digest in str(error.value)
    assert _files(out) == []


def test_truncated_blob_in_storage_refused(registry_server, checkpoint, tmp_path):
    result = publish(checkpoint(), f"oci://{registry_server.address}")
    info = inspect_artifact(str(result.digest_reference))
    stored = registry_server.blob_file(info.artifact.layer.digest)
    stored.write_bytes(stored.read_bytes()[: info.artifact.layer.size // 2])
    out = tmp_path / "out"

    with pytest.raises(RegistryError) as error:
        pull(str(result.digest_reference), out)
    assert info.artifact.layer.digest in str(error.value)
    assert _files(out) == []


def test_tampered_config_in_storage_refused(registry_server, checkpoint, tmp_path):
    result = publish(checkpoint(), f"oci://{registry_server.address}")
    info = inspect_artifact(str(result.digest_reference))
    stored = registry_server.blob_file(info.artifact.config.digest)
    stored.write_bytes(stored.read_bytes().replace(b'"tiny"', b'"tinY"'))

    with pytest.raises(VerificationError, match="failed verification"):
        inspect_artifact(str(result.digest_reference))
    with pytest.raises(VerificationError):
        pull(str(result.digest_reference), tmp_path / "out")
    assert _files(tmp_path / "out") == []


def test_server_stopped_mid_publish(registry_server, checkpoint, tmp_path):
    source = checkpoint()
    stopped = []

    def stop_during_layer(label: str, done: int, total: int) -> None:
        if label == source.name and not stopped:
            registry_server.stop()
            stopped.append(done)

    with pytest.raises(RegistryError) as error:
        publish(source, f"oci://{registry_server.address}", progress=stop_during_layer)
    message = str(error.value)
    assert stopped and stopped[0] < source.stat().st_size
    assert "the connection to" in message
    assert "The tag 1.0.0 was not changed; run the publish again" in message

    registry_server.start()
    with RemoteStore(RemoteReference(registry_server.address, "tiny")) as store:
        assert store.resolve_tag("1.0.0") is None

    retry = publish(source, f"oci://{registry_server.address}")
    assert retry.previous_digest is None
    assert retry.uploaded_blobs == 1
    assert retry.present_blobs == 1
    assert pull(registry_server.url("tiny", "1.0.0"), tmp_path / "out").path.read_bytes() == source.read_bytes()


def test_list_repositories_and_tags(registry_server, checkpoint):
    publish(checkpoint(), registry_server.url("team/tiny"))
    publish(checkpoint(name="other"), f"oci://{registry_server.address}")

    everything = list_repositories(RemoteRoot(registry_server.address))
    assert [str(reference) for reference in everything] == [registry_server.url("other"), registry_server.url("team/tiny")]
    team = list_repositories(RemoteRoot(registry_server.address, "team"))
    assert [str(reference) for reference in team] == [registry_server.url("team/tiny")]

    tags = list_tags(registry_server.url("team/tiny"))
    assert [(info.tag, info.artifact.annotations["zoo.task"]) for info in tags] == [("1.0.0", "classification")]


def test_cli_publish_pull_list_inspect(registry_server, checkpoint, tmp_path):
    source = checkpoint()
    published = zoo_command("publish", str(source), f"oci://{registry_server.address}", cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    digest_reference = published.stdout.strip()
    assert digest_reference.startswith(f"oci://{registry_server.address}/tiny@sha256:")
    assert "blobs: 2 uploaded" in published.stderr

    again = zoo_command("publish", str(source), f"oci://{registry_server.address}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == digest_reference
    assert "blobs: 0 uploaded (0 B), 2 already present" in again.stderr

    pulled = zoo_command("pull", digest_reference, "--out", "out", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / pulled.stdout.strip()).read_bytes() == source.read_bytes()

    listed = zoo_command("list", registry_server.url("tiny"), "--insecure", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "1.0.0" in listed.stdout
    assert digest_reference.partition("@")[2] in listed.stdout

    repositories = zoo_command("list", f"oci://{registry_server.address}", cwd=tmp_path)
    assert repositories.returncode == 0, repositories.stderr
    assert registry_server.url("tiny") in repositories.stdout

    inspected = zoo_command("inspect", registry_server.url("tiny", "1.0.0"), "--json", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    summary = json.loads(inspected.stdout)
    assert summary["digest_reference"] == digest_reference
    assert summary["manifest"]["name"] == "tiny"
    layer_get = f'"GET /v2/tiny/blobs/sha256:{summary["sha256"]}'
    assert registry_server.access_log().count(layer_get) == 1


def test_cli_tag_conflict_and_stopped_server(registry_server, checkpoint, tmp_path):
    publish(checkpoint(), f"oci://{registry_server.address}")
    conflict = zoo_command("publish", str(checkpoint(seed=3)), f"oci://{registry_server.address}", cwd=tmp_path)
    assert conflict.returncode == 1
    assert "already points to" in conflict.stderr
    assert "--force" in conflict.stderr

    registry_server.stop()
    down = zoo_command("pull", registry_server.url("tiny", "1.0.0"), cwd=tmp_path)
    assert down.returncode == 1
    assert f"the connection to {registry_server.address} failed" in down.stderr
    assert "check that the registry is running" in down.stderr
    assert "Traceback" not in down.stderr


def test_missing_repository_and_tag_hints(registry_server, checkpoint, tmp_path):
    publish(checkpoint(), registry_server.url("tiny"))
    with pytest.raises(NotFoundError) as missing_repository:
        pull(registry_server.url("nosuchrepo", "1.0.0"), tmp_path / "a")
    assert f"the repository does not exist; `zoo list oci://{registry_server.address}` shows the repositories" in str(missing_repository.value)
    with pytest.raises(NotFoundError) as missing_tag:
        pull(registry_server.url("tiny", "9.9.9"), tmp_path / "b")
    assert f"`zoo list {registry_server.url('tiny')}` shows the tags it has" in str(missing_tag.value)
    assert _files(tmp_path / "a") == []
    assert _files(tmp_path / "b") == []
