"""Shape measurement on the meta device and construction without allocation."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


def _dense_like(tensor: Tensor) -> Tensor:
    """Return a meta tensor laid out as a CPU kernel lays out its output for `tensor`."""
    channels_last = tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(tuple(tensor.shape), dtype=tensor.dtype, device="meta", memory_format=layout)


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


def _softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    return torch.empty(tuple(input.shape), dtype=dtype or input.dtype, device="meta")


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
    aten.add.Tensor: _contiguous_like_input,
    aten.mul.Tensor: _contiguous_like_input,
    aten.mul.Scalar: _contiguous_like_input,
    aten._safe_softmax.default: _softmax,
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
    if func in (aten.add.Tensor, aten.mul.Tensor):
        # Only the plain case: contiguous operands of one dtype, where the first
        # operand has the broadcast shape, so the output is laid out like it.
        return (
            len(tensors) == 2
            and isinstance(args[1], Tensor)
            and tensors[0].dtype == tensors[1].dtype
            and all(t.is_contiguous() for t in tensors)
            and torch.broadcast_shapes(tensors[0].shape, tensors[1].shape) == tensors[0].shape
        )
    if func in (aten.mul.Scalar, aten._safe_softmax.default):
        # A Python number keeps a floating-point tensor's dtype.
        return args[0].is_contiguous() and args[0].is_floating_point() and isinstance(args[1], (int, float))
    return True


def meta_forward(module: nn.Module, *args: Tensor) -> object:
    """Run `module` on meta tensors so that only shapes are computed.

    Every parameter and buffer is swapped for a meta tensor of the same shape
    for the duration of the call, so the module's own tensors are untouched
    and no arithmetic runs. `args` must already be on the meta device.

    Inside `recording_shapes`, the outputs' shapes are recorded. Inside
    `replaying_shapes`, a recorded call with the same module structure and
    inputs returns meta tensors of the recorded shapes without running.
    """
    recording, replaying = _RECORDING.get(), _REPLAYING.get()
    key = _call_key(module, args) if recording is not None or replaying is not None else ""
    if replaying is not None:
        replayed = replaying.next_outputs(key)
        if replayed is not None:
            return replayed
    outputs = _run_on_meta(module, args)
    if recording is not None:
        recording.add(key, outputs)
    return outputs


def _run_on_meta(module: nn.Module, args: tuple[Tensor, ...]) -> object:
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


def _call_key(module: nn.Module, args: tuple[Tensor, ...]) -> str:
    """Return a digest of the module's class, tensor names and shapes, and the inputs' shapes."""
    parts = [f"{type(module).__module__}.{type(module).__qualname__}"]
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        parts.append(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}")
    parts.extend(f"input:{tuple(arg.shape)}:{arg.dtype}" for arg in args)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class _NotRecordable(Exception):
    """A meta forward returned something the record cannot describe."""


# Containers a record describes, by exact type; subclasses such as named tuples are not recorded.
_CONTAINER_KINDS: dict[type, str] = {list: "list", tuple: "tuple", dict: "dict", collections.OrderedDict: "ordered_dict"}
_DTYPES_BY_NAME = {str(dtype).removeprefix("torch."): dtype for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool)}


def _describe(value: object) -> Any:
    """Return a JSON-ready description of tensors in (nested) lists, tuples and string-keyed dicts."""
    if isinstance(value, Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in _DTYPES_BY_NAME:
            raise _NotRecordable(f"dtype {value.dtype}")
        return {"tensor": [list(value.shape), list(value.stride()), dtype]}
    kind = _CONTAINER_KINDS.get(type(value))
    if kind in ("list", "tuple"):
        return {kind: [_describe(item) for item in value]}  # type: ignore[attr-defined]
    if kind is not None and all(isinstance(key, str) for key in value):  # type: ignore[attr-defined]
        return {kind: [[key, _describe(item)] for key, item in value.items()]}  # type: ignore[attr-defined]
    raise _NotRecordable(type(value).__name__)


def _rebuild(description: Any) -> object:
    """Turn `_describe`'s output back into meta tensors; raise ValueError when it is malformed."""
    if not isinstance(description, dict) or len(description) != 1:
        raise ValueError("an entry must be an object with one key")
    (kind, content), = description.items()
    if kind == "tensor":
        shape, stride, dtype = content
        if dtype not in _DTYPES_BY_NAME or len(shape) != len(stride) or not all(isinstance(n, int) and n >= 0 for n in [*shape, *stride]):
            raise ValueError("malformed tensor entry")
        return torch.empty_strided(shape, stride, dtype=_DTYPES_BY_NAME[dtype], device="meta")
    if kind in ("list", "tuple") and isinstance(content, list):
        items = [_rebuild(item) for item in content]
        return items if kind == "list" else tuple(items)
    if kind in ("dict", "ordered_dict") and isinstance(content, list):
        pairs = [(str(key), _rebuild(item)) for key, item in content]
        return dict(pairs) if kind == "dict" else collections.OrderedDict(pairs)
    raise ValueError(f"unknown entry kind {kind!r}")


@dataclass
class _Recording:
    """The meta forwards of one build, in call order, as `[key, outputs]` pairs."""

    calls: list[list[Any]] = field(default_factory=list)
    complete: bool = True

    def add(self, key: str, outputs: object) -> None:
        try:
            self.calls.append([key, _describe(outputs)])
        except _NotRecordable:
            self.complete = False


@dataclass
class _Replay:
    """Recorded calls handed out in order while each key matches the next call's."""

    calls: list[Any]
    position: int = 0
    broken: bool = False

    def next_outputs(self, key: str) -> object | None:
        if self.broken or self.position >= len(self.calls):
            return None
        try:
            recorded_key, description = self.calls[self.position]
            outputs = _rebuild(description) if recorded_key == key else None
        except (ValueError, TypeError, RuntimeError):
            outputs = None
        if outputs is None:
            self.broken = True  # measure this call and every later one
            return None
        self.position += 1
        return outputs


_RECORDING: contextvars.ContextVar[_Recording | None] = contextvars.ContextVar("heads_core_recording", default=None)
_REPLAYING: contextvars.ContextVar[_Replay | None] = contextvars.ContextVar("heads_core_replaying", default=None)


@contextlib.contextmanager
def recording_shapes() -> Iterator[_Recording]:
    """Record the outputs of every `meta_forward` call inside the block.

    The yielded record's `calls` are JSON-ready. Its `complete` is False when
    a call returned something that cannot be recorded, and such a record
    must not be replayed.
    """
    record = _Recording()
    token = _RECORDING.set(record)
    try:
        yield record
    finally:
        _RECORDING.reset(token)


@contextlib.contextmanager
def replaying_shapes(calls: Any) -> Iterator[None]:
    """Return recorded outputs for `meta_forward` calls inside the block, from a record of the same build.

    Calls are matched in order by a digest of the module's structure and
    inputs. At the first call that does not match, or when `calls` is
    malformed, measuring takes over for the rest of the block.
    """
    replay = _Replay(calls if isinstance(calls, list) else [], broken=not isinstance(calls, list))
    token = _REPLAYING.set(replay)
    try:
        yield
    finally:
        _REPLAYING.reset(token)


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
