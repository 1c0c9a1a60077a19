"""Checking fetched manifests: only zoo checkpoint artifacts with safe file names are pulled."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from zoo.registry import VerificationError
from zoo.registry.artifact import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    LAYER_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    artifact_for_checkpoint,
    canonical_bytes,
    parse_artifact,
    sha256_digest,
)

VALID: dict[str, Any] = {
    "schemaVersion": 2,
    "mediaType": MANIFEST_MEDIA_TYPE,
    "artifactType": ARTIFACT_TYPE,
    "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": "sha256:" + "a" * 64, "size": 10},
    "layers": [
        {
            "mediaType": LAYER_MEDIA_TYPE,
            "digest": "sha256:" + "b" * 64,
            "size": 100,
            "annotations": {"org.opencontainers.image.title": "tiny-1.0.0.safetensors"},
        }
    ],
    "annotations": {"zoo.task": "classification"},
}


def _parse(document: dict[str, Any]):
    data = canonical_bytes(document)
    return parse_artifact(data, sha256_digest(data), "oci://host/x:1")


def _changed(path: list[Any], value: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return document


def test_valid_manifest_parses():
    parsed = _parse(VALID)
    assert parsed.file_name == "tiny-1.0.0.safetensors"
    assert parsed.layer.size == 100
    assert parsed.annotations == {"zoo.task": "classification"}


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (["artifactType"], "application/vnd.other", "artifactType 'application/vnd.other'"),
        (["config", "mediaType"], "application/vnd.oci.image.config.v1+json", "config media type"),
        (["mediaType"], "application/vnd.oci.image.index.v1+json", "not an OCI image manifest"),
        (["schemaVersion"], 1, "not an OCI image manifest"),
        (["layers"], [], "has 0 layers"),
        (["layers", 0, "mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip", "a zoo checkpoint layer has"),
        (["layers", 0, "digest"], "sha512:" + "b" * 128, "zoo reads only sha256:HEX digests"),
        (["layers", 0, "size"], -1, "non-negative integer"),
        (["layers", 0, "annotations", "org.opencontainers.image.title"], "../evil.safetensors", "single file name"),
        (["layers", 0, "annotations", "org.opencontainers.image.title"], "dir/tiny.safetensors", "single file name"),
        (["layers", 0, "annotations", "org.opencontainers.image.title"], "tiny.pt", "ending in .safetensors"),
        (["config", "size"], 1 << 30, "-byte limit"),
    ],
)
def test_invalid_manifest_rejected(path, value, fragment):
    with pytest.raises(VerificationError) as error:
        _parse(_changed(path, value))
    assert fragment in str(error.value)


def test_non_json_manifest_rejected():
    with pytest.raises(VerificationError, match="not valid JSON"):
        parse_artifact(b"\xff\xfe", "sha256:" + "0" * 64, "oci://host/x:1")


def test_artifact_is_deterministic(checkpoint):
    first = artifact_for_checkpoint(checkpoint())
    second = artifact_for_checkpoint(checkpoint())
    assert first.manifest == second.manifest
    assert first.digest == second.digest == sha256_digest(first.manifest)
    assert b"created" not in first.manifest


def test_rejects_file_without_zoo_metadata(tmp_path):
    import torch
    from heads_core import CheckpointError
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without zoo metadata"):
        artifact_for_checkpoint(plain)
