"""Damaged checkpoints are rejected with a message naming the file; nothing partial loads."""

from __future__ import annotations

import json
import random

import pytest
import torch
from heads_core import CheckpointError, build_model, load_model, save_model, validate_manifest
from heads_core.checkpoint import read_header, read_tensors, write_checkpoint

MANIFEST = {
    "name": "faults",
    "version": "1",
    "task": "regression",
    "num_outputs": 2,
    "backbone": {"source": "torchvision", "name": "mobilenet_v3_small"},
    "preprocess": {"input_size": [32, 32], "mean": [0.5] * 3, "std": [0.2] * 3},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    manifest = validate_manifest(MANIFEST)
    path = tmp_path_factory.mktemp("ckpt") / "faults-1.safetensors"
    save_model(build_model(manifest).model, manifest, path)
    return path


def _rejects(path):
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    assert str(path) in str(caught.value)
    return str(caught.value)


def test_truncated_at_many_offsets(checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    offsets = sorted({0, 1, 7, 8, 9, header_end - 1, header_end, header_end + 1, len(data) - 1}
                     | set(random.Random(0).sample(range(len(data)), 40)))
    for offset in offsets:
        target = tmp_path / f"cut-{offset}.safetensors"
        target.write_bytes(data[:offset])
        _rejects(target)
    assert len(offsets) >= 45


def test_trailing_bytes_rejected(checkpoint, tmp_path):
    target = tmp_path / "long.safetensors"
    target.write_bytes(checkpoint.read_bytes() + b"\0" * 16)
    assert "trailing bytes" in _rejects(target)


@pytest.mark.parametrize("seed", range(30))
def test_corrupt_header_bytes(checkpoint, tmp_path, seed):
    data = bytearray(checkpoint.read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(seed)
    for _ in range(3):
        position = rng.randrange(8, header_end)
        data[position] = rng.choice(b'{}[]",:0123456789abcXYZ \xff')
    target = tmp_path / "corrupt.safetensors"
    target.write_bytes(bytes(data))
    try:
        loaded = load_model(target)
    except CheckpointError as error:
        assert str(target) in str(error)
        return
    # A change that keeps the header valid (a digit inside a version string,
    # say) may load; then it must be the same model.
    original = load_model(checkpoint)
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor)


def test_header_length_beyond_file(checkpoint, tmp_path):
    data = bytearray(checkpoint.read_bytes())
    data[:8] = (len(data) + 10).to_bytes(8, "little")
    target = tmp_path / "length.safetensors"
    target.write_bytes(bytes(data))
    assert "header length" in _rejects(target)


def test_wrong_dtype_named(checkpoint, tmp_path):
    header = read_header(checkpoint)
    tensors = {k: v.clone() for k, v in read_tensors(header).items()}
    tensors["head.fc.weight"] = tensors["head.fc.weight"].double()
    target = tmp_path / "dtype.safetensors"
    write_checkpoint(target, tensors, header.metadata)
    assert "'head.fc.weight'" in _rejects(target)
    assert "torch.float64" in _rejects(target)


def test_unsupported_format_version(checkpoint, tmp_path):
    header = read_header(checkpoint)
    target = tmp_path / "v9.safetensors"
    write_checkpoint(target, read_tensors(header), {**header.metadata, "zoo.format": "9"})
    assert "format '9' is not supported" in _rejects(target)


def test_embedded_manifest_invalid(checkpoint, tmp_path):
    import hashlib

    header = read_header(checkpoint)
    manifest = json.loads(header.metadata["zoo.manifest"])
    manifest["num_outputs"] = -1
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    metadata = {**header.metadata, "zoo.manifest": text, "zoo.manifest_sha256": hashlib.sha256(text.encode()).hexdigest()}
    target = tmp_path / "manifest.safetensors"
    write_checkpoint(target, read_tensors(header), metadata)
    assert "embedded manifest is invalid" in _rejects(target)


def test_folder_instead_of_file(tmp_path):
    assert "folder" in _rejects(tmp_path)


def test_missing_file(tmp_path):
    assert "no such file" in _rejects(tmp_path / "absent.safetensors")
