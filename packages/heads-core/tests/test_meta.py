"""Shape rules of meta_forward and construction with parameters on the meta device."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
import torchvision
from heads_core import meta_forward, parameters_on_meta
from heads_core._meta import _SHAPE_RULES, _FastShapes
from heads_core.checkpoint import write_checkpoint
from torch import nn

aten = torch.ops.aten


def _layout(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.shape), tensor.dtype, tuple(tensor.stride())


def _channels_last(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta").to(memory_format=torch.channels_last)


def _permuted(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta").transpose(-1, -2)


def _vector(size: int) -> torch.Tensor:
    return torch.empty(size, device="meta")


CALLS = [
    pytest.param(aten.native_batch_norm.default, lambda: (torch.empty(2, 8, 5, 7, device="meta"), _vector(8), _vector(8), _vector(8), _vector(8), False, 0.1, 1e-5), id="batch-norm"),
    pytest.param(aten.native_batch_norm.default, lambda: (_channels_last(2, 8, 5, 7), _vector(8), _vector(8), _vector(8), _vector(8), False, 0.1, 1e-5), id="batch-norm-channels-last"),
    pytest.param(aten._native_batch_norm_legit_no_training.default, lambda: (torch.empty(2, 8, 5, device="meta"), _vector(8), _vector(8), _vector(8), _vector(8), 0.1, 1e-5), id="batch-norm-no-training"),
    pytest.param(aten.native_layer_norm.default, lambda: (torch.empty(2, 49, 96, device="meta"), [96], _vector(96), _vector(96), 1e-5), id="layer-norm"),
    pytest.param(aten.native_layer_norm.default, lambda: (_permuted(2, 96, 49), [96], _vector(96), _vector(96), 1e-5), id="layer-norm-permuted"),
    pytest.param(aten.native_layer_norm.default, lambda: (torch.empty(2, 7, 7, 96, device="meta"), [7, 96], None, None, 1e-5), id="layer-norm-two-dims"),
    pytest.param(aten.addmm.default, lambda: (_vector(10), torch.empty(6, 4, device="meta"), torch.empty(4, 10, device="meta")), id="addmm"),
    pytest.param(aten.addmm.default, lambda: (_vector(10), torch.empty(6, 4, device="meta"), torch.empty(10, 4, device="meta").t()), id="addmm-transposed"),
    pytest.param(aten.gelu.default, lambda: (_permuted(2, 3, 5),), id="gelu-permuted"),
    pytest.param(aten.gelu.default, lambda: (_channels_last(2, 3, 5, 5),), id="gelu-channels-last"),
    pytest.param(aten.roll.default, lambda: (_permuted(2, 7, 7), [3, 3], [1, 2]), id="roll-permuted"),
    pytest.param(aten.add.Tensor, lambda: (torch.empty(2, 49, 96, device="meta"), torch.empty(2, 49, 96, device="meta")), id="add"),
    pytest.param(aten.add.Tensor, lambda: (torch.empty(2, 49, 96, device="meta"), torch.empty(96, device="meta")), id="add-broadcast"),
    pytest.param(aten.add.Tensor, lambda: (_permuted(2, 49, 96), _permuted(2, 49, 96)), id="add-permuted"),
    pytest.param(aten.add.Tensor, lambda: (torch.empty(96, device="meta"), torch.empty(2, 49, 96, device="meta")), id="add-broadcast-first"),
    pytest.param(aten.add.Tensor, lambda: (torch.empty(2, 4, 3, 49, 49, device="meta"), torch.empty(1, 4, 1, 49, 49, device="meta")), id="add-window-mask"),
    pytest.param(aten.add.Tensor, lambda: (torch.empty(2, 8, 5, 5, device="meta"), torch.empty(1, 8, 1, 1, device="meta").expand(2, 8, 5, 5)), id="add-expanded"),
    pytest.param(aten.mul.Tensor, lambda: (_channels_last(2, 8, 5, 5), torch.empty(1, 8, 1, 1, device="meta")), id="mul-channels-last-broadcast"),
    pytest.param(aten.mul.Tensor, lambda: (torch.empty(2, 8, 5, 5, device="meta"), torch.empty(8, 1, 1, device="meta")), id="mul-broadcast"),
    pytest.param(aten.mul.Tensor, lambda: (torch.empty(4, 5, device="meta"), torch.empty(4, 5, device="meta", dtype=torch.float16)), id="mul-promoted"),
    pytest.param(aten.mul.Tensor, lambda: (torch.empty(4, 5, device="meta"), torch.empty(4, 5, device="meta")), id="mul"),
    pytest.param(aten.mul.Scalar, lambda: (torch.empty(4, 5, device="meta"), 0.125), id="mul-scalar"),
    pytest.param(aten.mul.Scalar, lambda: (torch.empty(4, 5, device="meta", dtype=torch.int64), 0.5), id="mul-scalar-integer"),
    pytest.param(aten._safe_softmax.default, lambda: (torch.empty(2, 3, 49, 49, device="meta"), -1), id="safe-softmax"),
    pytest.param(aten._safe_softmax.default, lambda: (torch.empty(2, 3, 49, 49, device="meta"), -1, torch.float16), id="safe-softmax-dtype"),
]


@pytest.mark.parametrize(("func", "make_args"), CALLS)
def test_shape_rule_matches_the_meta_kernel(func, make_args):
    args = make_args()
    expected = func(*args)
    with _FastShapes():
        fast = func(*args)
    if isinstance(expected, torch.Tensor):
        expected, fast = (expected,), (fast,)
    # The first output is what forwards use; check it exactly, the statistics by shape.
    assert _layout(fast[0]) == _layout(expected[0])
    for ours, theirs in zip(fast[1:], expected[1:], strict=True):
        assert ours.dtype == theirs.dtype
        assert ours.numel() in (0, theirs.numel())


def test_every_rule_is_covered():
    assert {call.values[0] for call in CALLS} == set(_SHAPE_RULES)


def test_training_batch_norm_runs_the_meta_kernel():
    args = (torch.empty(2, 8, 5, device="meta"), _vector(8), _vector(8), _vector(8), _vector(8), True, 0.1, 1e-5)
    expected = aten.native_batch_norm.default(*args)
    with _FastShapes():
        ours = aten.native_batch_norm.default(*args)
    assert [tuple(t.shape) for t in ours] == [tuple(t.shape) for t in expected]


def _shapes(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return _layout(value)
    if isinstance(value, dict):
        return {key: _shapes(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shapes(item) for item in value]
    return value


MODELS = [
    pytest.param(lambda: timm.create_model("test_vit", num_classes=0), (1, 3, 160, 160), id="timm-test-vit"),
    pytest.param(lambda: timm.create_model("resnet18", num_classes=0), (1, 3, 64, 80), id="timm-resnet18"),
    pytest.param(lambda: timm.create_model("swin_tiny_patch4_window7_224", num_classes=0), (1, 3, 224, 224), id="timm-swin-tiny"),
    pytest.param(lambda: torchvision.models.mobilenet_v3_small(), (1, 3, 96, 96), id="torchvision-mobilenet-v3"),
    pytest.param(lambda: torchvision.models.resnet18().to(memory_format=torch.channels_last), (1, 3, 64, 64), id="torchvision-resnet18-channels-last"),
]


@pytest.mark.parametrize(("make", "size"), MODELS)
def test_meta_forward_matches_real_shapes(make, size):
    with parameters_on_meta():
        model = make()
    real_model = make().eval()
    with torch.no_grad():
        real = real_model(torch.zeros(size))
    measured = meta_forward(model, torch.empty(size, device="meta"))
    assert measured.device.type == "meta"
    assert tuple(measured.shape) == tuple(real.shape)
    assert measured.dtype == real.dtype


def test_parameters_on_meta_skips_writes_and_keeps_buffers():
    class WithBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 3)
            nn.init.trunc_normal_(self.linear.weight, std=0.02)
            self.register_buffer("index", torch.arange(6).reshape(2, 3), persistent=False)
            self.index.add_(1)

    with parameters_on_meta():
        module = WithBuffer()
    assert module.linear.weight.device.type == "meta"
    assert module.linear.weight.shape == (3, 4)
    assert torch.equal(module.index, torch.arange(1, 7).reshape(2, 3))
    # Outside the block, parameters are real and initialisers write again.
    real = nn.Linear(4, 3)
    nn.init.zeros_(real.weight)
    assert real.weight.device.type == "cpu"
    assert torch.count_nonzero(real.weight) == 0


def test_shape_changing_writes_still_apply_on_meta():
    with parameters_on_meta():
        tensor = torch.empty(2, 3, device="meta")
        tensor.unsqueeze_(0)
        tensor.transpose_(1, 2)
    assert tuple(tensor.shape) == (1, 3, 2)


def test_write_checkpoint_returns_the_files_sha256(tmp_path):
    generator = torch.Generator().manual_seed(0)
    state = {
        "big": torch.randn(300, 500, generator=generator),
        "odd": torch.randn(7, generator=generator),
        "transposed": torch.randn(40, 30, generator=generator).t(),
        "half": torch.randn(33, generator=generator).half(),
    }
    path = tmp_path / "hashed.safetensors"
    digest = write_checkpoint(path, state, {"zoo.format": "1"})
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(backbone: dict, **fields):
    from heads_core import validate_manifest

    data = {"name": "replay", "version": "1.0.0", "task": "classification", "backbone": backbone, "num_classes": 3, **fields}
    return validate_manifest(data, "<replay test>")


REPLAY_BACKBONES = [
    pytest.param({"source": "timm", "name": "test_vit"}, id="timm-test-vit"),
    pytest.param({"source": "timm", "name": "swin_tiny_patch4_window7_224"}, id="timm-swin-tiny"),
    pytest.param({"source": "torchvision", "name": "resnet18"}, id="torchvision-resnet18"),
]


@pytest.fixture
def count_measurements(monkeypatch):
    from heads_core import _meta

    calls = []
    original = _meta._run_on_meta

    def counted(module, args):
        calls.append(type(module).__name__)
        return original(module, args)

    monkeypatch.setattr(_meta, "_run_on_meta", counted)
    return calls


def _save_built(tmp_path, manifest, *, with_shapes: bool = True):
    from heads_core import build_model, save_model

    result = build_model(manifest)
    assert result.measured_shapes, "the build recorded no measurement"
    path = tmp_path / "replay.safetensors"
    save_model(result.model, manifest, path, result.reinitialized, result.measured_shapes if with_shapes else None)
    return result.model, path


def _same_outputs(built, loaded, size=(2, 3, 64, 64)):
    inputs = torch.randn(size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(built(inputs), loaded(inputs))


@pytest.mark.parametrize("backbone", REPLAY_BACKBONES)
def test_load_replays_the_builds_shapes_without_measuring(tmp_path, backbone, count_measurements):
    from heads_core import load_model

    manifest = _manifest(backbone)
    built, path = _save_built(tmp_path, manifest)
    count_measurements.clear()
    loaded = load_model(path).model
    assert count_measurements == []
    size = (2, 3, *manifest.preprocess.input_size) if manifest.preprocess.input_size else (2, 3, 64, 64)
    _same_outputs(built, loaded, size)


def _with_metadata(path, tmp_path, **changes):
    from heads_core.checkpoint import read_header, read_tensors

    header = read_header(path)
    metadata = {**header.metadata, **changes}
    target = tmp_path / "edited.safetensors"
    write_checkpoint(target, {name: t.clone() for name, t in read_tensors(header).items()}, metadata)
    return target


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"zoo.versions": '{"torch":"0.0.1"}'}, id="other-versions"),
        pytest.param({"zoo.measured_shapes": "[[\"0123\", {\"tensor\": [[1], [1], \"float32\"]}]]"}, id="other-module"),
        pytest.param({"zoo.measured_shapes": '{"not": "a list"}'}, id="not-a-list"),
        pytest.param({"zoo.measured_shapes": "[[1, 2, 3]]"}, id="malformed-entry"),
        pytest.param({"zoo.measured_shapes": "[nonsense"}, id="not-json"),
    ],
)
def test_load_remeasures_unusable_record(tmp_path, changes, count_measurements):
    from heads_core import load_model

    manifest = _manifest({"source": "timm", "name": "test_vit"})
    built, path = _save_built(tmp_path, manifest)
    edited = _with_metadata(path, tmp_path, **changes)
    count_measurements.clear()
    loaded = load_model(edited).model
    assert count_measurements, "the load did not measure"
    _same_outputs(built, loaded, (2, 3, 160, 160))


def test_checkpoint_without_shapes_loads_by_measuring(tmp_path, count_measurements):
    from heads_core import load_model
    from heads_core.checkpoint import read_header

    manifest = _manifest({"source": "torchvision", "name": "resnet18"})
    built, path = _save_built(tmp_path, manifest, with_shapes=False)
    assert "zoo.measured_shapes" not in read_header(path).metadata
    count_measurements.clear()
    _same_outputs(built, load_model(path).model)
    assert count_measurements


def test_unrecordable_outputs_leave_no_record():
    from heads_core._meta import recording_shapes

    class Odd(nn.Module):
        def forward(self, x):
            return {"sizes": x.shape}

    with recording_shapes() as record:
        meta_forward(Odd(), torch.empty(1, 3, device="meta"))
    assert not record.complete
