"""Frozen batch norms and frozen backbone stages.

Everything here changes module types and `requires_grad` flags only, never
parameter values that depend on data, so it runs the same way when a model
is rebuilt on the meta device from a checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = [
    "check_trainable",
    "eval_mode",
    "freeze_batchnorm",
    "freeze_leading_stages",
    "parameter_stages",
    "set_frozen_batchnorm_eps",
]


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put `module` in eval mode for the block, then restore every submodule's mode.

    Shape measurements on the meta device run about twice as fast in eval
    mode, because batch norms then skip their running-statistics update.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, training in modes:
            submodule.training = training


def _copy_if_real(target: Tensor, source: Tensor) -> None:
    # On the meta device there is nothing to copy; the checkpoint supplies the values later.
    if source.device.type != "meta" and target.device.type != "meta":
        with torch.no_grad():
            target.copy_(source.detach())


def _frozen_copy(module: nn.BatchNorm2d) -> nn.Module:
    """Return a frozen batch norm with the statistics and affine values of `module`."""
    if hasattr(module, "act") and hasattr(module, "drop"):
        # timm's BatchNormAct2d: a batch norm followed by its own dropout and activation.
        from timm.layers import FrozenBatchNormAct2d

        frozen: nn.Module = FrozenBatchNormAct2d(module.num_features)
        frozen.drop = module.drop
        frozen.act = module.act
    else:
        frozen = FrozenBatchNorm2d(module.num_features)
    frozen.eps = module.eps
    if module.affine:
        _copy_if_real(frozen.weight, module.weight)
        _copy_if_real(frozen.bias, module.bias)
    if module.running_mean is not None and module.running_var is not None:
        _copy_if_real(frozen.running_mean, module.running_mean)
        _copy_if_real(frozen.running_var, module.running_var)
    return frozen


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d and SyncBatchNorm below `module` by a frozen copy.

    Each copy keeps its layer's epsilon, affine values and running statistics.
    Returns the converted module (a new object when `module` itself is a batch norm).
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return _frozen_copy(module)
    for name, child in list(module.named_children()):
        converted = freeze_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def set_frozen_batchnorm_eps(module: nn.Module, eps: float) -> int:
    """Set the epsilon of every frozen batch norm below `module`; return how many were changed."""
    count = 0
    for layer in module.modules():
        if type(layer).__name__.startswith("FrozenBatchNorm"):
            layer.eps = eps
            count += 1
    return count


def _accumulated_leaves(output: Tensor, names: dict[int, str]) -> set[str]:
    """Return the names of the leaf tensors `output` was computed from."""
    found: set[str] = set()
    stack = [output.grad_fn]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None and id(variable) in names:
            found.add(names[id(variable)])
        stack.extend(child for child, _ in node.next_functions)
    return found


def parameter_stages(module: nn.Module, in_chans: int, input_size: Sequence[int]) -> list[list[str]]:
    """Group the parameters of a multi-output backbone into stages.

    Stage k contains the parameters that output k depends on and no earlier
    output does. Parameters that no output uses join the last stage.
    Dependencies are traced through autograd on the meta device, so no
    arithmetic runs and the backbone's own tensors are untouched.
    """
    parameters = dict(module.named_parameters())
    stand_ins = {name: torch.empty_like(p, device="meta").requires_grad_(True) for name, p in parameters.items()}
    buffers = {name: torch.empty_like(b, device="meta") for name, b in module.named_buffers()}
    names = {id(t): name for name, t in stand_ins.items()}
    image = torch.empty(1, in_chans, *input_size, device="meta")
    with torch.enable_grad(), eval_mode(module):
        outputs = functional_call(module, {**stand_ins, **buffers}, (image,), strict=False, tie_weights=False)
    outputs = list(outputs.values()) if isinstance(outputs, dict) else list(outputs)
    stages: list[list[str]] = []
    assigned: set[str] = set()
    for output in outputs:
        used = _accumulated_leaves(output, names) - assigned
        stages.append([n for n in parameters if n in used])
        assigned |= used
    leftover = [n for n in parameters if n not in assigned]
    if stages:
        stages[-1].extend(leftover)
    return stages


def check_trainable(trainable: int, stage_count: int) -> None:
    """Raise ValueError when `trainable` is outside 0..stage_count."""
    if not 0 <= trainable <= stage_count:
        raise ValueError(
            f"backbone.trainable_layers is {trainable}, but this backbone has {stage_count} stages; "
            f"choose a value from 0 (whole backbone frozen) to {stage_count} (everything trains)"
        )


def freeze_leading_stages(module: nn.Module, stages: list[list[str]], trainable: int) -> None:
    """Freeze the parameters of every stage except the last `trainable` ones.

    Raises:
        ValueError: `trainable` is outside 0..len(stages).
    """
    check_trainable(trainable, len(stages))
    frozen = {name for stage in stages[: len(stages) - trainable] for name in stage}
    for name, parameter in module.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
