"""The anchor path: the library's builder, then `load_state_dict` from a safetensors file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from .cases import Anchor

# (name, shape, dtype) of one tensor of a state dict, in state-dict order.
TensorSpec = tuple[str, tuple[int, ...], torch.dtype]


def build_anchor(anchor: Anchor) -> nn.Module:
    """Call the anchor's builder with random initialisation and return the model in eval mode."""
    if anchor.library == "timm":
        import timm

        model = timm.create_model(anchor.name, pretrained=False, **anchor.kwargs)
    elif anchor.library == "torchvision":
        import torchvision

        model = torchvision.models.get_model(anchor.name, **anchor.kwargs)
    else:
        raise ValueError(f"unknown anchor library {anchor.library!r}; choose timm or torchvision")
    return model.eval()


def state_specs(state: Mapping[str, torch.Tensor]) -> list[TensorSpec]:
    """Return the name, shape and dtype of every tensor of a state dict, in order."""
    return [(name, tuple(tensor.shape), tensor.dtype) for name, tensor in state.items()]


def _common_prefix(zoo_names: Sequence[str], anchor_names: set[str]) -> str:
    """Return the prefix P for which the most zoo names are P + an anchor name."""
    counts: Counter[str] = Counter()
    for name in zoo_names:
        parts = name.split(".")
        for cut in range(len(parts)):
            if ".".join(parts[cut:]) in anchor_names:
                counts[".".join(parts[:cut]) + ("." if cut else "")] += 1
    return counts.most_common(1)[0][0] if counts else ""


def pair_keys(zoo: Sequence[TensorSpec], anchor: Sequence[TensorSpec]) -> dict[str, str]:
    """Map each zoo tensor name to the anchor model's name for the same tensor.

    Names are paired by stripping the zoo model's wrapper prefix, such as
    `backbone.model.`. The names left over on both sides are paired in
    state-dict order, which is the order the modules were built in. Every
    pair must agree in shape and dtype.

    Raises:
        ValueError: the two models do not have the same tensors.
    """
    anchor_by_name = {name: (shape, dtype) for name, shape, dtype in anchor}
    prefix = _common_prefix([name for name, _, _ in zoo], set(anchor_by_name))
    pairs: dict[str, str] = {}
    for name, _, _ in zoo:
        bare = name.removeprefix(prefix)
        if name.startswith(prefix) and bare in anchor_by_name:
            pairs[name] = bare
    zoo_rest = [spec for spec in zoo if spec[0] not in pairs]
    paired_anchor = set(pairs.values())
    anchor_rest = [spec for spec in anchor if spec[0] not in paired_anchor]
    if len(zoo_rest) != len(anchor_rest):
        raise ValueError(
            f"the zoo model has {len(zoo)} tensors and the anchor {len(anchor)}; unpaired zoo tensors: "
            f"{[n for n, _, _ in zoo_rest][:5]}, unpaired anchor tensors: {[n for n, _, _ in anchor_rest][:5]}"
        )
    for (zoo_name, _, _), (anchor_name, _, _) in zip(zoo_rest, anchor_rest):
        pairs[zoo_name] = anchor_name
    for name, shape, dtype in zoo:
        expected = anchor_by_name[pairs[name]]
        if (shape, dtype) != expected:
            raise ValueError(
                f"zoo tensor {name!r} ({shape}, {dtype}) pairs with anchor tensor {pairs[name]!r} "
                f"({expected[0]}, {expected[1]}); the models differ"
            )
    return pairs


def load_anchor(anchor: Anchor, path: Path, names: Mapping[str, str]) -> nn.Module:
    """Build the anchor model and load every tensor of the safetensors file at `path` into it, strictly.

    `names` maps the file's tensor names to the anchor's (see `pair_keys`).
    """
    from safetensors.torch import load_file

    model = build_anchor(anchor)
    state = load_file(str(path))
    model.load_state_dict({names[name]: tensor for name, tensor in state.items()}, strict=True)
    return model.eval()
