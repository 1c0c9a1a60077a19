"""Shape measurement on the meta device and construction without allocation."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# In-place operators that change the shape or the storage of the tensor they
# write; writes through every other in-place operator keep the shape.
_SHAPE_CHANGING = frozenset(
    {
        "resize_",
        "resize_as_",
        "set_",
        "as_strided_",
        "squeeze_",
        "unsqueeze_",
        "transpose_",
        "t_",
        "swapaxes_",
        "swapdims_",
        "_resize_output_",
    }
)


def _writes_first_argument(func: torch._ops.OpOverload) -> bool:
    arguments = func._schema.arguments
    if not arguments or arguments[0].alias_info is None or not arguments[0].alias_info.is_write:
        return False
    return func.overloadpacket.__name__ not in _SHAPE_CHANGING


class _SkipMetaWrites(TorchDispatchMode):
    """Return the target of an in-place write unchanged when it is a meta tensor.

    Initialisers such as `trunc_normal_` write values into parameters that
    `parameters_on_meta` created on the meta device. A meta tensor has no
    values, so the write is pointless, and some of those operators run slow
    reference kernels on meta tensors.
    """

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if args and isinstance(args[0], Tensor) and args[0].device.type == "meta" and _writes_first_argument(func):
            return args[0]
        return func(*args, **(kwargs or {}))


def _dense_like(tensor: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """Return a meta tensor laid out as a CPU kernel lays out its output for `tensor`."""
    shape = tuple(tensor.shape) if shape is None else shape
    channels_last = tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last and len(shape) == 4 else torch.contiguous_format
    return torch.empty(shape, dtype=tensor.dtype, device="meta", memory_format=layout)


def _batch_norm(input: Tensor, *args: Any) -> tuple[Tensor, Tensor, Tensor]:
    empty = torch.empty(0, dtype=input.dtype, device="meta")
    return _dense_like(input), empty, empty


def _layer_norm(input: Tensor, normalized_shape: list[int], *args: Any) -> tuple[Tensor, Tensor, Tensor]:
    leading = tuple(input.shape[: input.dim() - len(normalized_shape)])
    statistics = leading + (1,) * len(normalized_shape)
    out = torch.empty(tuple(input.shape), dtype=input.dtype, device="meta")
    return out, torch.empty(statistics, dtype=input.dtype, device="meta"), torch.empty(statistics, dtype=input.dtype, device="meta")


def _addmm(bias: Tensor, first: Tensor, second: Tensor, **kwargs: Any) -> Tensor:
    return torch.empty((first.shape[0], second.shape[1]), dtype=first.dtype, device="meta")


def _same_as_input(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return torch.empty_like(input)


def _contiguous_like_input(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return torch.empty(tuple(input.shape), dtype=input.dtype, device="meta")


# Shape rules for the operators whose meta kernels are slow Python
# decompositions. Each rule returns the shapes, dtypes and memory layout that
# the CPU kernel returns for the arguments an eval-mode forward passes.
# Every other operator runs its own meta kernel.
_SHAPE_RULES: dict[Any, Callable[..., Any]] = {
    aten.native_batch_norm.default: _batch_norm,
    aten._native_batch_norm_legit_no_training.default: _batch_norm,
    aten.native_layer_norm.default: _layer_norm,
    aten.addmm.default: _addmm,
    aten.gelu.default: _same_as_input,
    aten.roll.default: _contiguous_like_input,
}


class _FastShapes(TorchDispatchMode):
    """Compute output shapes of slow meta kernels with the rules above."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        rule = _SHAPE_RULES.get(func)
        if rule is not None and _applies(func, args):
            return rule(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


def _applies(func: Any, args: tuple) -> bool:
    tensors = [a for a in args if isinstance(a, Tensor)]
    if not tensors or any(t.device.type != "meta" for t in tensors):
        return False
    if func is aten.native_batch_norm.default:
        return args[5] is False  # training-mode statistics have other shapes
    if func is aten.addmm.default:
        first, second = args[1], args[2]
        return first.dim() == 2 and second.dim() == 2 and first.dtype == second.dtype == args[0].dtype
    return True


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
        with torch.no_grad(), _FastShapes():
            return functional_call(module, state, args, strict=False, tie_weights=False)
    finally:
        for child, training in modes:
            child.training = training


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create every `nn.Parameter` registered inside the block on the meta device.

    Buffers stay on the CPU and are computed as usual, so modules that derive
    non-persistent buffers at construction (relative position indices,
    attention masks) come out right. Initialisers that write into the meta
    parameters are skipped, since the real values are assigned afterwards.
    """
    original = nn.Module.register_parameter

    def register_on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        with _SkipMetaWrites():
            yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
