"""Shape measurement on the meta device and construction without allocation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call


def meta_forward(module: nn.Module, *args: Tensor) -> object:
    """Run `module` on meta tensors so that only shapes are computed.

    Every parameter and buffer is swapped for a meta tensor of the same shape
    for the duration of the call, so the module's own tensors are untouched
    and no arithmetic runs. `args` must already be on the meta device.
    """
    state = {
        name: torch.empty_like(tensor, device="meta")
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]
    }
    # Eval mode: BatchNorm in train mode takes a much slower path on meta tensors.
    # Each submodule's flag is restored, since some keep parts in eval mode on purpose.
    modes = [(child, child.training) for child in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            return functional_call(module, state, args, strict=False, tie_weights=False)
    finally:
        for child, training in modes:
            child.training = training


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every `nn.Parameter` registered inside the block on the meta device.

    Buffers stay on the CPU and are computed as usual, so modules that derive
    non-persistent buffers at construction (relative position indices,
    attention masks) come out right. Parameter initialisers then run on meta
    tensors and cost nothing; the real values are assigned afterwards.
    """
    original = nn.Module.register_parameter

    def register_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
