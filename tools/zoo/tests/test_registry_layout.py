"""Publishing to and pulling from OCI image layout folders, the default registry."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import zoo
from zoo.registry import (
    LayoutReference,
    NotFoundError,
    RegistryError,
    TagConflictError,
    VerificationError,
    inspect_artifact,
    list_repositories,
    list_tags,
    publish,
    pull,
)
from zoo.registry.artifact import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    canonical_bytes,
    sha256_digest,
)
from zoo.registry.reference import LayoutRoot


def _files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.partition(":")[2]


def _layer_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text())
    entry = next(e for e in index["manifests"] if e["annotations"]["org.opencontainers.image.ref.name"] == tag)
    manifest = json.loads(_blob(layout, entry["digest"]).read_bytes())
    return manifest["layers"][0]["digest"]


def test_publish_default_registry_then_pull(checkpoint, tmp_path):
    source = checkpoint()
    result = publish(source)
    layout = tmp_path / "cache" / "zoo" / "registry" / "tiny"
    assert result.reference == LayoutReference(layout, "1.0.0")
    assert result.digest_reference == LayoutReference(layout, None, result.digest)
    assert (result.uploaded_blobs, result.present_blobs) == (2, 0)
    assert result.previous_digest is None
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    by_tag = pull("tiny:1.0.0", tmp_path / "by-tag")
    assert by_tag.path == tmp_path / "by-tag" / source.name
    assert by_tag.path.read_bytes() == source.read_bytes()
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(by_tag.path.stat().st_mode) == 0o666 & ~umask
    assert by_tag.digest_reference == result.digest_reference

    by_digest = pull(f"tiny@{result.digest}", tmp_path / "by-digest")
    assert by_digest.path.read_bytes() == source.read_bytes()


def test_artifact_manifest_follows_oci_artifact_layout(checkpoint, tmp_path):
    source = checkpoint()
    result = publish(source, str(tmp_path / "layout"))
    manifest_bytes = _blob(tmp_path / "layout", result.digest).read_bytes()
    manifest = json.loads(manifest_bytes)

    assert manifest_bytes == canonical_bytes(manifest)
    assert sha256_digest(manifest_bytes) == result.digest
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["mediaType"] == LAYER_MEDIA_TYPE
    assert layer["annotations"]["org.opencontainers.image.title"] == source.name
    assert layer["size"] == source.stat().st_size
    assert manifest["annotations"] == {
        "org.opencontainers.image.title": "tiny",
        "org.opencontainers.image.version": "1.0.0",
        "org.opencontainers.image.description": "A tiny classifier for registry tests.",
        "zoo.format": "1",
        "zoo.task": "classification",
    }
    config = _blob(tmp_path / "layout", manifest["config"]["digest"]).read_bytes()
    assert json.loads(config)["backbone"]["name"] == "test_resnet"


def test_same_checkpoint_same_digest_everywhere(checkpoint, tmp_path):
    first = publish(checkpoint(), str(tmp_path / "one"))
    second = publish(checkpoint(), f"oci-layout:{tmp_path / 'two'}:other-tag")
    assert first.digest == second.digest


def test_republish_copies_nothing(checkpoint, tmp_path):
    source = checkpoint()
    publish(source, str(tmp_path / "layout"))
    again = publish(source, str(tmp_path / "layout"))
    assert again.unchanged
    assert again.uploaded_bytes == 0
    assert (again.uploaded_blobs, again.present_blobs) == (0, 2)


def test_tag_move_needs_force(checkpoint, tmp_path):
    layout = str(tmp_path / "layout")
    original = checkpoint()
    first = publish(original, layout)
    other = checkpoint(seed=7)

    with pytest.raises(TagConflictError) as error:
        publish(other, layout)
    message = str(error.value)
    assert first.digest in message
    assert "--force" in message
    assert [info.digest for info in list_tags(layout)] == [first.digest]
    assert pull(f"{layout}:1.0.0", tmp_path / "still").path.read_bytes() == original.read_bytes()

    moved = publish(other, layout, force=True)
    assert moved.previous_digest == first.digest
    assert [info.digest for info in list_tags(layout)] == [moved.digest]
    assert pull(f"{layout}@{first.digest}", tmp_path / "old").path.exists()


def test_tampered_layer_refused_nothing_written(checkpoint, tmp_path):
    layout = tmp_path / "layout"
    publish(checkpoint(), str(layout))
    blob = _blob(layout, _layer_digest(layout, "1.0.0"))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    out = tmp_path / "out"

    with pytest.raises(VerificationError) as error:
        pull(f"{layout}:1.0.0", out)
    assert "failed verification" in str(error.value)
    assert _files(out) == []


def test_truncated_layer_refused_nothing_written(checkpoint, tmp_path):
    layout = tmp_path / "layout"
    publish(checkpoint(), str(layout))
    blob = _blob(layout, _layer_digest(layout, "1.0.0"))
    blob.write_bytes(blob.read_bytes()[:-100])
    out = tmp_path / "out"

    with pytest.raises(VerificationError) as error:
        pull(f"{layout}:1.0.0", out)
    assert "received" in str(error.value)
    assert _files(out) == []


def test_tampered_manifest_refused(checkpoint, tmp_path):
    layout = tmp_path / "layout"
    result = publish(checkpoint(), str(layout))
    manifest = _blob(layout, result.digest)
    manifest.write_bytes(manifest.read_bytes().replace(b'"1.0.0"', b'"9.9.9"'))

    with pytest.raises(VerificationError, match="does not match its digest"):
        pull(f"{layout}:1.0.0", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_republish_repairs_damaged_blob(checkpoint, tmp_path):
    layout = tmp_path / "layout"
    source = checkpoint()
    publish(source, str(layout))
    blob = _blob(layout, _layer_digest(layout, "1.0.0"))
    blob.write_bytes(b"damaged")

    repaired = publish(source, str(layout))
    assert repaired.uploaded_blobs == 1
    assert blob.read_bytes() == source.read_bytes()


def test_pull_keeps_identical_file_refuses_other(checkpoint, tmp_path):
    layout = str(tmp_path / "layout")
    source = checkpoint()
    publish(source, layout)
    out = tmp_path / "out"
    first = pull(f"{layout}:1.0.0", out)
    assert first.downloaded

    again = pull(f"{layout}:1.0.0", out)
    assert not again.downloaded

    first.path.write_bytes(b"something else")
    with pytest.raises(RegistryError, match="--force"):
        pull(f"{layout}:1.0.0", out)
    assert first.path.read_bytes() == b"something else"

    forced = pull(f"{layout}:1.0.0", out, force=True)
    assert forced.path.read_bytes() == source.read_bytes()


def test_config_must_match_embedded_manifest(checkpoint, tmp_path):
    """An artifact whose config blob differs from the checkpoint's own manifest is refused."""
    layout = tmp_path / "layout"
    result = publish(checkpoint(), str(layout))
    manifest = json.loads(_blob(layout, result.digest).read_bytes())
    forged_config = b'{"name":"forged"}'
    _blob(layout, sha256_digest(forged_config)).write_bytes(forged_config)
    manifest["config"] = {"mediaType": CONFIG_MEDIA_TYPE, "digest": sha256_digest(forged_config), "size": len(forged_config)}
    forged = canonical_bytes(manifest)
    _blob(layout, sha256_digest(forged)).write_bytes(forged)
    out = tmp_path / "out"

    with pytest.raises(VerificationError, match="another zoo manifest"):
        pull(f"{layout}@{sha256_digest(forged)}", out)
    assert _files(out) == []


def test_pull_without_tag_or_digest_rejected(checkpoint, tmp_path):
    publish(checkpoint(), str(tmp_path / "layout"))
    with pytest.raises(RegistryError, match="names no tag or digest"):
        pull(str(tmp_path / "layout"), tmp_path / "out")


def test_missing_tag_and_layout_reported(checkpoint, tmp_path):
    publish(checkpoint(), str(tmp_path / "layout"))
    with pytest.raises(NotFoundError, match="no tag '2.0.0'"):
        pull(f"{tmp_path / 'layout'}:2.0.0", tmp_path / "out")
    with pytest.raises(NotFoundError, match="not an OCI image layout"):
        pull(f"{tmp_path / 'nowhere'}:1.0.0", tmp_path / "out")


def test_publish_refuses_non_layout_folder(checkpoint, tmp_path):
    folder = tmp_path / "busy"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RegistryError, match="not an OCI image layout"):
        publish(checkpoint(), str(folder))
    assert _files(folder) == ["notes.txt"]


def test_inspect_reads_no_weights(checkpoint, tmp_path):
    layout = tmp_path / "layout"
    result = publish(checkpoint(), str(layout))
    _blob(layout, _layer_digest(layout, "1.0.0")).unlink()

    info = inspect_artifact(f"{layout}:1.0.0")
    assert info.digest_reference == result.digest_reference
    assert info.zoo_manifest["name"] == "tiny"
    assert info.artifact.file_name == "tiny-1.0.0.safetensors"


def test_list_repositories_of_folder(checkpoint, tmp_path):
    root = tmp_path / "root"
    publish(checkpoint(), registry=str(root))
    publish(checkpoint(name="other"), registry=str(root))
    found = list_repositories(LayoutRoot(root))
    assert found == [LayoutReference(root / "other"), LayoutReference(root / "tiny")]


def test_load_from_reference(checkpoint, tmp_path):
    source = checkpoint()
    publish(source)
    loaded = zoo.load("tiny:1.0.0")
    assert loaded.manifest.name == "tiny"
    cached = list((tmp_path / "cache" / "zoo" / "checkpoints").rglob("*.safetensors"))
    assert [path.read_bytes() == source.read_bytes() for path in cached] == [True]

    direct = zoo.load(source)
    for name, tensor in direct.model.state_dict().items():
        assert tensor.equal(loaded.model.state_dict()[name]), name


def test_load_replaces_damaged_cache(checkpoint, tmp_path):
    source = checkpoint()
    publish(source)
    zoo.load("tiny:1.0.0")
    cached = next((tmp_path / "cache" / "zoo" / "checkpoints").rglob("*.safetensors"))
    cached.write_bytes(b"damaged")

    zoo.load("tiny:1.0.0")
    assert cached.read_bytes() == source.read_bytes()


def test_relative_layout_digest_reference_is_absolute(checkpoint, tmp_path, monkeypatch):
    source = checkpoint()
    monkeypatch.chdir(tmp_path)
    result = publish(source, "oci-layout:layouts/tiny")
    assert result.digest_reference.path == (tmp_path / "layouts" / "tiny").resolve()
    monkeypatch.chdir(source.parent)
    pulled = pull(str(result.digest_reference), tmp_path / "pulled")
    assert pulled.path.read_bytes() == source.read_bytes()
