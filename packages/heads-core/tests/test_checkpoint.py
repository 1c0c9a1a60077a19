import json
import pickle
import struct
import subprocess
import sys

import pytest
import torch
from heads_core import (
    CheckpointError,
    ManifestError,
    build_model,
    inspect_checkpoint,
    load_model,
    save_model,
    validate_manifest,
)
from heads_core._api import assign_state
from heads_core.checkpoint import read_header, read_tensors, write_checkpoint
from torch import nn

from .conftest import manifest_data


@pytest.fixture(scope="module")
def built():
    manifest = validate_manifest(manifest_data())
    return manifest, build_model(manifest).model


@pytest.fixture
def saved(tmp_path, built):
    manifest, model = built
    path = tmp_path / "tiny-1.0.0.safetensors"
    save_model(model, manifest, path)
    return path


def _rewrite(saved, tmp_path, rename):
    header = read_header(saved)
    tensors = {rename(name): t.clone() for name, t in read_tensors(header).items()}
    target = tmp_path / "edited.safetensors"
    write_checkpoint(target, tensors, header.metadata)
    return target


def test_metadata_fields(saved):
    header, manifest = inspect_checkpoint(saved)
    meta = header.metadata
    assert meta["zoo.format"] == "1"
    assert meta["zoo.task"] == "classification"
    assert json.loads(meta["zoo.outputs"])["activation"] == "softmax"
    assert "torch" in json.loads(meta["zoo.versions"])
    assert json.loads(meta["zoo.reinitialized"]) == []
    assert json.loads(meta["zoo.manifest"])["name"] == manifest.name == "tiny"


def test_plain_safetensors_reader_opens_checkpoint(saved, built):
    from safetensors.torch import load_file

    tensors = load_file(str(saved))
    assert torch.equal(tensors["head.fc.weight"], built[1].head.fc.weight)


def test_module_prefix_loads(saved, tmp_path, built):
    prefixed = _rewrite(saved, tmp_path, lambda name: f"module.{name}")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(load_model(prefixed).model(x), built[1](x))


def test_mismatched_keys_listed(saved, tmp_path):
    renamed = _rewrite(saved, tmp_path, lambda name: name.replace("head.fc.bias", "head.fc.offset"))
    with pytest.raises(CheckpointError) as caught:
        load_model(renamed)
    text = str(caught.value)
    assert "missing keys (1): head.fc.bias" in text
    assert "unexpected keys (1): head.fc.offset" in text


def test_mismatch_never_loads_partially(built):
    _, model = built
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    state["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        assign_state(model, state, "memory")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_wrong_shape_named(saved, tmp_path):
    header = read_header(saved)
    tensors = {k: v.clone() for k, v in read_tensors(header).items()}
    tensors["head.fc.weight"] = torch.zeros(5, 512)
    target = tmp_path / "shape.safetensors"
    write_checkpoint(target, tensors, header.metadata)
    with pytest.raises(CheckpointError, match=r"tensor 'head.fc.weight' has shape \(5, 512\)"):
        load_model(target)


@pytest.mark.parametrize("keep", [0, 4, 8, 20, 200, -1000, -1])
def test_truncated_file_rejected(saved, tmp_path, keep):
    data = saved.read_bytes()
    target = tmp_path / "cut.safetensors"
    target.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=str(target)):
        load_model(target)


def test_oversized_header_rejected(tmp_path):
    target = tmp_path / "big.safetensors"
    target.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(CheckpointError, match="header length"):
        read_header(target)


def test_edited_manifest_detected(saved, tmp_path):
    header = read_header(saved)
    metadata = dict(header.metadata)
    metadata["zoo.manifest"] = metadata["zoo.manifest"].replace('"num_classes":3', '"num_classes":4')
    target = tmp_path / "edited.safetensors"
    write_checkpoint(target, read_tensors(header), metadata)
    with pytest.raises(CheckpointError, match="does not match zoo.manifest_sha256"):
        load_model(target)


def test_plain_safetensors_explains_pretrained_use(tmp_path):
    from safetensors.torch import save_file

    target = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(target))
    with pytest.raises(CheckpointError, match="backbone.weights"):
        load_model(target)


def test_pickle_renamed_is_not_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('/tmp/zoo-pickle-ran', 'w').write('x')",))

    target = tmp_path / "evil.safetensors"
    target.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError):
        load_model(target)
    import os

    assert not os.path.exists("/tmp/zoo-pickle-ran")


def test_shared_storage_written_once(tmp_path):
    shared = torch.arange(6.0)
    state = {"a.weight": shared, "b.weight": shared, "c": torch.ones(2)}
    path = tmp_path / "shared.safetensors"
    write_checkpoint(path, state, {})
    header = read_header(path)
    assert sorted(header.tensors) == ["a.weight", "c"]
    assert json.loads(header.metadata["zoo.aliases"]) == {"b.weight": "a.weight"}


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 4)
        self.decoder = nn.Linear(4, 4)
        self.decoder.weight = self.encoder.weight


def test_tied_weights_stay_tied(tmp_path):
    from heads_core._api import expand_aliases

    model = Tied()
    path = tmp_path / "tied.safetensors"
    write_checkpoint(path, model.state_dict(), {})
    header = read_header(path)
    fresh = Tied()
    assign_state(fresh, expand_aliases(header, read_tensors(header)), path)
    assert fresh.decoder.weight is fresh.encoder.weight
    assert torch.equal(fresh.encoder.weight, model.encoder.weight)


def test_write_is_atomic_on_failure(tmp_path):
    target = tmp_path / "out.safetensors"
    with pytest.raises(ValueError, match="meta device"):
        write_checkpoint(target, {"a": torch.ones(2), "b": torch.empty(3, device="meta")}, {})
    assert list(tmp_path.iterdir()) == []


def test_unchecked_backbone_name_accepted():
    data = manifest_data(backbone={"source": "timm", "name": "no_such_model"})
    with pytest.raises(ManifestError, match="unknown timm backbone 'no_such_model'"):
        validate_manifest(data)
    assert validate_manifest(data, check_backbone_names=False).backbone.name == "no_such_model"


def test_inspect_checkpoint_skips_timm_import(tmp_path):
    manifest = validate_manifest(manifest_data(
        backbone={"source": "timm", "name": "test_resnet"},
        preprocess={"input_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    ))
    path = tmp_path / "tiny.safetensors"
    save_model(build_model(manifest).model, manifest, path)
    # A fresh interpreter, because this one imported timm to build the model.
    code = (
        "import sys, heads_core\n"
        f"header, manifest = heads_core.inspect_checkpoint({str(path)!r})\n"
        "print(manifest.backbone.name, 'timm' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["test_resnet", "False"]


def test_checkpoint_of_missing_task_package(saved, monkeypatch):
    import heads_core

    registered = heads_core.plugins._registered_entry_points()
    without = {task: point for task, point in registered.items() if task != "classification"}
    monkeypatch.setattr(heads_core.plugins, "_registered_entry_points", lambda: without)
    with pytest.raises(CheckpointError) as raised:
        inspect_checkpoint(saved)
    message = str(raised.value)
    assert message.startswith(f"{saved}: a classification checkpoint, but task 'classification' needs the package")
    assert "invalid" not in message


def test_unknown_tag_in_checkpoint_still_loads(tmp_path, built):
    # A tag that the installed library no longer has: the weights are in the file, so loading goes on.
    _, model = built
    data = manifest_data(backbone={"source": "torchvision", "name": "resnet18", "weights": "IMAGENET0K_GONE"})
    manifest = validate_manifest(data, check_weights_tags=False)
    path = tmp_path / "tagged.safetensors"
    save_model(model, manifest, path)
    loaded = load_model(path)
    assert loaded.manifest.backbone.weights == "IMAGENET0K_GONE"
    assert torch.equal(loaded.model.state_dict()["head.fc.weight"], model.state_dict()["head.fc.weight"])
