"""Model construction that skips initialisations a later write overwrites.

Library constructors often initialise a parameter twice: `nn.Linear` and
`nn.Conv2d` fill their weights in `reset_parameters`, and the model's own
init function then fills them again (timm's `trunc_normal_`, torchvision's
`kaiming_normal_`). Loading pretrained weights overwrites them a third time.
Only the last write survives, but every one of them costs a pass over the
tensor, and random fills are the bulk of a constructor's time.

`deferred_initialisation` holds back in-place writes to parameters created
inside the block and runs them when their values are needed: when another
operator reads the parameter, or when the block ends. A write that replaces
every element (a random fill, `fill_`, `zero_`, `copy_`) drops the writes
held back before it. Reads are seen at the operator level, so any code
observes the values that running every write in order gives. Only the random
numbers differ, because skipped fills draw none.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from ._meta import _writes_first_argument

# In-place operators whose result does not depend on the tensor's previous values.
_REPLACING = frozenset(
    {"uniform_", "normal_", "fill_", "zero_", "random_", "exponential_", "log_normal_", "cauchy_", "geometric_", "bernoulli_", "copy_"}
)

# One held-back write: the operator, its arguments (the first is the written view) and keyword arguments.
_Write = tuple[Any, tuple, dict]


def _storage_key(tensor: Tensor) -> int | None:
    if tensor.device.type != "cpu" or tensor.numel() == 0:
        return None
    return tensor.untyped_storage().data_ptr()


def _covers_storage(tensor: Tensor) -> bool:
    """Tell whether writing every element of `tensor` writes every byte of its storage."""
    return (
        tensor.storage_offset() == 0
        and tensor.is_contiguous()
        and tensor.numel() * tensor.element_size() == tensor.untyped_storage().nbytes()
    )


# Operators that read their inputs' shapes, dtypes and devices but no values.
_METADATA_ONLY = frozenset(
    {
        "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like",
        "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full",
    }
)


@dataclass(frozen=True)
class _OperatorFacts:
    """Properties of one operator overload that the dispatch path checks."""

    reads_no_values: bool  # it only makes views of its inputs or reads their metadata
    writes_first: bool  # it writes its first argument in place, keeping the shape
    replaces: bool  # the write does not depend on the first argument's previous values


@functools.cache
def _facts(func: torch._ops.OpOverload) -> _OperatorFacts:
    name = func.overloadpacket.__name__
    returns = func._schema.returns
    views = bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)
    return _OperatorFacts(name in _METADATA_ONLY or views, _writes_first_argument(func), name in _REPLACING)


def _tensors(args: tuple, kwargs: dict) -> Iterator[Tensor]:
    """Yield the tensors among operator arguments: aten arguments are tensors, lists of tensors, or neither."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (item for item in value if isinstance(item, Tensor))


class _DeferWrites(TorchDispatchMode):
    """Hold back in-place writes to tracked parameter storages until they are read."""

    def __init__(self) -> None:
        super().__init__()
        # Tracked storages by data pointer, each with a parameter that keeps it
        # alive (so the pointer cannot be reused) and its held-back writes.
        self.owners: dict[int, Tensor] = {}
        self.pending: dict[int, list[_Write]] = {}
        # True while held-back writes run from outside __torch_dispatch__,
        # where they pass through this mode again and must not be held back.
        self.replaying = False

    def track(self, param: Tensor) -> None:
        key = _storage_key(param)
        if key is not None and key not in self.owners:
            self.owners[key] = param
            self.pending[key] = []

    def flush(self, key: int) -> None:
        writes = self.pending.get(key)
        if not writes:
            return
        self.pending[key] = []
        self.replaying, replaying = True, self.replaying
        try:
            _run(writes)
        finally:
            self.replaying = replaying

    def flush_all(self) -> None:
        """Run every held-back write, spreading the tensors over torch's CPU threads.

        Each tensor's random fills draw from a generator of its own, seeded
        from one draw of torch's generator plus the tensor's position in
        registration order. The values then depend on the seed alone, not on
        which thread fills which tensor first.
        """
        lists = [writes for writes in self.pending.values() if writes]
        self.pending = {key: [] for key in self.pending}
        if not lists:
            return
        base = int(torch.randint(0, 2**62, ()).item())
        serial, parallel = [], []
        for index, writes in enumerate(lists):
            if any(kwargs.get("generator") is not None for _, _, kwargs in writes):
                serial.append(writes)  # a caller's own generator is drawn from in order
            else:
                parallel.append(_with_generator(writes, base + index))
        for writes in serial:
            _run(writes)
        workers = min(torch.get_num_threads(), len(parallel))
        if workers <= 1:
            for writes in parallel:
                _run(writes)
            return
        largest_first = sorted(parallel, key=lambda writes: -writes[0][1][0].numel())
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="heads-core-init") as pool:
            for _ in pool.map(_run, largest_first):
                pass

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        facts = _facts(func)
        first = args[0] if args and isinstance(args[0], Tensor) else None
        # Meta tensors (shape measurement) and views carry no values to wait for.
        if self.replaying or facts.reads_no_values or (first is not None and first.device.type == "meta"):
            return func(*args, **kwargs)
        target = _storage_key(first) if first is not None and facts.writes_first else None
        if target not in self.owners:
            target = None
        rest = list(_tensors(args[1:], kwargs)) if target is not None else list(_tensors(args, kwargs))
        read = {key for key in map(_storage_key, rest) if key in self.owners}
        if target is not None and facts.replaces and target not in read and _covers_storage(first):  # type: ignore[arg-type]
            self.pending[target] = []  # every earlier write is overwritten
        if target is not None and not rest:
            self.pending[target].append((func, args, kwargs))
            return first
        for key in read | ({target} if target is not None else set()):
            self.flush(key)  # type: ignore[arg-type]
        return func(*args, **kwargs)


_RANDOM_NAMES = frozenset({"uniform_", "normal_", "random_", "exponential_", "log_normal_", "cauchy_", "geometric_", "bernoulli_"})


def _with_generator(writes: list[_Write], seed: int) -> list[_Write]:
    """Give every random fill of one tensor's writes the same new generator, seeded with `seed`."""
    if not any(func.overloadpacket.__name__ in _RANDOM_NAMES for func, _, _ in writes):
        return writes
    generator = torch.Generator().manual_seed(seed)
    return [
        (func, args, {**kwargs, "generator": generator}) if func.overloadpacket.__name__ in _RANDOM_NAMES else (func, args, kwargs)
        for func, args, kwargs in writes
    ]


def _run(writes: list[_Write]) -> None:
    with torch.no_grad():
        for func, args, kwargs in writes:
            func(*args, **kwargs)


_DIRECT_READS = ("tolist", "numpy", "__array__", "__reduce_ex__")


@contextlib.contextmanager
def deferred_initialisation(*, discard: bool = False) -> Iterator[None]:
    """Construct models inside the block with their parameters' dead writes skipped.

    With `discard`, the writes still held back when the block ends are
    dropped instead of run. That is for a caller that then replaces every
    parameter, as loading a checkpoint does: the constructor's fills never
    run and the parameters' memory is never touched.

    Parameters registered inside the block are tracked. In-place writes to
    them whose other arguments are not tensors are held back until an
    operator reads the parameter or the block ends. A write that replaces
    every element drops the ones held back before it. Values read through
    operators, `tolist()`, `numpy()`, `__array__` and pickling are up to date.
    NOTE: code that reads a parameter's memory through `data_ptr()` inside
    the block gets stale values; no library constructor tried here does so.

    Random fills draw from torch's generator when they run, so a model built
    inside the block has other random values than one built outside it with
    the same seed. Two builds inside the block with the same seed agree.
    """
    mode = _DeferWrites()
    original = nn.Module.register_parameter

    def register_tracked(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(self, name, param)
        registered = self._parameters.get(name)
        if registered is not None:
            mode.track(registered)

    def flushing_first(method: Any) -> Any:
        def read(tensor: Tensor, *args: Any, **kwargs: Any) -> Any:
            key = _storage_key(tensor)
            if key in mode.owners:
                mode.flush(key)  # type: ignore[arg-type]
            return method(tensor, *args, **kwargs)

        return read

    # Tensor methods that read values without going through an operator.
    saved = {name: torch.Tensor.__dict__.get(name) for name in _DIRECT_READS}
    nn.Module.register_parameter = register_tracked  # type: ignore[method-assign]
    for name in _DIRECT_READS:
        setattr(torch.Tensor, name, flushing_first(getattr(torch.Tensor, name)))
    try:
        with mode:
            yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)
    if not discard:
        mode.flush_all()
