"""Construction with held-back parameter writes: dead writes skipped, every read up to date."""

from __future__ import annotations

import math

import heads_core._deferred as deferred
import pytest
import timm
import torch
import torchvision
from heads_core._deferred import deferred_initialisation
from torch import nn


@pytest.fixture
def executed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...]]]:
    """Record the operator name and target shape of every held-back write that runs."""
    ran: list[tuple[str, tuple[int, ...]]] = []
    original = deferred._run

    def run(writes: list) -> None:
        ran.extend((func.overloadpacket.__name__, tuple(args[0].shape)) for func, args, _ in writes)
        original(writes)

    monkeypatch.setattr(deferred, "_run", run)
    return ran


def test_overwritten_fills_skipped(executed: list) -> None:
    with deferred_initialisation():
        layer = nn.Linear(300, 200)  # kaiming_uniform_ on the weight, uniform_ on the bias
        nn.init.normal_(layer.weight, std=0.5)
        nn.init.zeros_(layer.bias)
    assert executed.count(("uniform_", (200, 300))) == 0
    assert executed.count(("uniform_", (200,))) == 0
    assert ("normal_", (200, 300)) in executed
    assert torch.equal(layer.bias, torch.zeros(200))
    assert 0.45 < layer.weight.std().item() < 0.55


def test_dependent_writes_in_order() -> None:
    with deferred_initialisation():
        layer = nn.Linear(4, 3)
        nn.init.constant_(layer.weight, 2.0)
        layer.weight.data.mul_(3.0).add_(1.0)
        layer.weight.data[0].fill_(-1.0)  # a view that covers only part of the tensor
    expected = torch.full((3, 4), 7.0)
    expected[0] = -1.0
    assert torch.equal(layer.weight, expected)


def test_reads_inside_block_current() -> None:
    with deferred_initialisation():
        first, second = nn.Linear(5, 5), nn.Linear(5, 5)
        nn.init.constant_(first.weight, 0.25)
        total = first.weight.sum().item()
        with torch.no_grad():
            second.weight.copy_(first.weight * 2)
        nn.init.constant_(first.bias, 1.5)
        as_list = first.bias.tolist()
        nn.init.constant_(second.bias, -2.0)
        as_array = second.bias.detach().numpy().copy()
    assert as_array.tolist() == [-2.0] * 5
    assert total == pytest.approx(25 * 0.25)
    assert torch.equal(second.weight, torch.full((5, 5), 0.5))
    assert as_list == [1.5] * 5


def test_copy_from_own_view() -> None:
    with deferred_initialisation():
        param = nn.Parameter(torch.empty(6))
        holder = nn.Module()
        holder.register_parameter("param", param)
        with torch.no_grad():
            param.copy_(torch.arange(6.0))
            param.mul_(2.0)
            param.copy_(param.flip(0))
    assert torch.equal(holder.param, torch.arange(6.0).flip(0) * 2)


def test_creation_values_kept() -> None:
    with deferred_initialisation():
        holder = nn.Module()
        holder.token = nn.Parameter(torch.arange(4.0))
        holder.scaled = nn.Parameter(torch.ones(3))
        holder.scaled.data.mul_(5.0)
    assert torch.equal(holder.token, torch.arange(4.0))
    assert torch.equal(holder.scaled, torch.full((3,), 5.0))


def test_truncated_normal_bounds_and_spread() -> None:
    with deferred_initialisation():
        layer = nn.Linear(400, 400)
        timm.layers.trunc_normal_(layer.weight, std=0.02)
    weight = layer.weight.detach()
    assert weight.abs().max().item() <= 2.0
    assert 0.018 < weight.std().item() < 0.022


def test_caller_generator_same_values() -> None:
    with deferred_initialisation():
        layer = nn.Linear(50, 40)
        layer.weight.data.normal_(generator=torch.Generator().manual_seed(7))
    expected = torch.empty(40, 50).normal_(generator=torch.Generator().manual_seed(7))
    assert torch.equal(layer.weight, expected)


def _seeded_state(seed: int, threads: int, build: object) -> dict[str, torch.Tensor]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        with deferred_initialisation():
            model = build()  # type: ignore[operator]
    finally:
        torch.set_num_threads(previous)
    return model.state_dict()


def test_values_depend_on_seed_only() -> None:
    def build() -> nn.Module:
        return timm.create_model("test_vit", num_classes=10)

    reference = _seeded_state(3, 2, build)
    for seed, threads in [(3, 1), (3, 2)]:
        state = _seeded_state(seed, threads, build)
        assert all(torch.equal(state[name], reference[name]) for name in reference)
    other = _seeded_state(4, 2, build)
    assert not torch.equal(other["blocks.0.attn.qkv.weight"], reference["blocks.0.attn.qkv.weight"])


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: torchvision.models.resnet18(num_classes=10), id="torchvision-resnet18"),
        pytest.param(lambda: timm.create_model("test_vit", num_classes=10), id="timm-test_vit"),
        pytest.param(lambda: timm.create_model("test_convnext", num_classes=10), id="timm-test_convnext"),
    ],
)
def test_library_distributions_kept(build: object) -> None:
    """Compare with the library's own construction: constants equal, random tensors alike in spread."""
    torch.manual_seed(0)
    plain = build().state_dict()  # type: ignore[operator]
    torch.manual_seed(0)
    with deferred_initialisation():
        ours = build().state_dict()  # type: ignore[operator]
    assert list(ours) == list(plain)
    for name, expected in plain.items():
        got = ours[name]
        assert got.shape == expected.shape, name
        assert got.dtype == expected.dtype, name
        if not expected.is_floating_point() or expected.numel() < 256 or expected.std() == 0:
            if expected.unique().numel() == 1 or not expected.is_floating_point():
                assert torch.equal(got, expected), name
            continue
        ratio = got.std().item() / expected.std().item()
        assert math.isclose(ratio, 1.0, abs_tol=0.15), f"{name}: spread ratio {ratio:.3f}"
        assert abs(got.mean().item() - expected.mean().item()) < 0.2 * expected.std().item() + 1e-6, name


def test_hooks_removed_after_error() -> None:
    original = nn.Module.register_parameter
    tensor_methods = dict(torch.Tensor.__dict__)
    with pytest.raises(RuntimeError, match="stop"), deferred_initialisation():
        nn.Linear(2, 2)
        raise RuntimeError("stop")
    assert nn.Module.register_parameter is original
    assert dict(torch.Tensor.__dict__) == tensor_methods
