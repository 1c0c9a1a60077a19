"""Feature levels for the segmentation decoders: dilation, measured strides, role selection.

Three kinds of backbone are built here:

- torchvision ResNet-family and MobileNetV3 classifiers ("layered"): their
  children are kept under their own names, as torchvision's segmentation
  models keep them, so torchvision's segmentation checkpoints load unchanged.
  ResNets with bottleneck blocks dilate to output stride 8 or 16, MobileNetV3
  to 16.
- timm models: `features_only` models, dilated through timm's `output_stride`
  where the model supports it, with dynamic input sizes where it supports
  them (Swin, ViT).
- other torchvision families: heads-core's `create_feature_backbone`, at the
  stride the family has.

Channels and strides are always measured with a forward pass on the meta
device, never taken from library metadata.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from heads_core import ZooError, create_feature_backbone, read_state_dict, replace_first_conv

# NOTE: these heads-core internals are used because `create_feature_backbone`
# has no way to pass timm's `output_stride` and `dynamic_img_size` options.
from heads_core._backbones import (
    FeatureBackbone,
    TimmTrunk,
    _create_timm,
    _torchvision_weights,
)
from heads_core._meta import meta_forward, parameters_on_meta
from heads_core._weights import (
    is_weight_file,
    key_mismatch_message,
    strip_known_prefix,
    torchvision_cache_file,
)
from torch import Tensor, nn

logger = logging.getLogger(__name__)

BackboneKind = Literal["resnet", "mobilenet_v3", "timm", "torchvision"]

RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")
MOBILENET_V3_PREFIXES = ("mobilenet_v3",)
# Output strides reached by dilating the last stages. The undilated stride is always available too.
DILATED_STRIDES = (8, 16)
MEASURE_SIZE = (224, 224)
# Odd sides, so a backbone that needs its input to be a multiple of some
# number (a patch size, a window size) fails the probe without padding.
PROBE_SIZE = (97, 131)
SIZE_DIVISORS = (1, 2, 4, 8, 16, 32, 64)
_RESNET_DILATION = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


class StrideUnavailableError(ValueError):
    """A backbone cannot give the requested output stride."""


def backbone_kind(source: str, name: str) -> BackboneKind:
    """Return how the segmentation package builds the backbone `source:name`."""
    if source == "timm":
        return "timm"
    if name.startswith(RESNET_PREFIXES):
        return "resnet"
    if name.startswith(MOBILENET_V3_PREFIXES):
        return "mobilenet_v3"
    return "torchvision"


# --- modules -------------------------------------------------------------------


class TorchvisionLayers(nn.ModuleDict):
    """The leading children of a torchvision classifier, run in order.

    `forward` returns the outputs of the children named in `returns` (a map
    from role, such as "out" or "aux", to child name). The state-dict keys
    are the classifier's own (`conv1.weight`, `layer4.2.bn3.weight`, or
    `0.0.weight` for MobileNetV3's `features`), as in torchvision's
    segmentation models.
    """

    def __init__(self, children: Sequence[tuple[str, nn.Module]], returns: Mapping[str, str]) -> None:
        super().__init__(dict(children))
        unknown = sorted(set(returns.values()) - set(self.keys()))
        if unknown:
            raise ValueError(f"no child named {', '.join(unknown)}; the children are {', '.join(self.keys())}")
        self.returns = dict(returns)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        for name, module in self.items():
            x = module(x)
            for role, child in self.returns.items():
                if child == name:
                    outputs[role] = x
        return outputs


class SelectedLevels(nn.Module):
    """A multi-level backbone (a list of maps) whose chosen levels are returned by role."""

    def __init__(self, body: nn.Module, returns: Mapping[str, int]) -> None:
        super().__init__()
        self.body = body
        self.returns = dict(returns)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps = self.body(x)
        return {role: maps[index] for role, index in self.returns.items()}


@dataclass
class Levels:
    """A backbone's feature levels, finest first, with their measured channels and strides.

    Attributes:
        body: a `TorchvisionLayers` (layered kinds) or a module returning a
            list of maps, one per level.
        children: for `TorchvisionLayers`, the child name of each level.
        size_divisor: input sides must be a multiple of this for the body
            to run; the segmentation model pads its input to it.
    """

    kind: BackboneKind
    body: nn.Module
    children: list[str] | None
    strides: list[int]
    channels: list[int]
    size_divisor: int
    timm_layout: str = ""

    def select(self, roles: Mapping[str, int]) -> nn.Module:
        """Return the backbone module that outputs a dict with one map per role."""
        if self.children is None:
            return SelectedLevels(self.body, roles)
        assert isinstance(self.body, TorchvisionLayers)
        names = list(self.body.keys())
        # Like torchvision's IntermediateLayerGetter, drop the children after the last level read.
        keep = names[: names.index(self.children[max(roles.values())]) + 1]
        return TorchvisionLayers(
            [(name, self.body[name]) for name in keep], {role: self.children[i] for role, i in roles.items()}
        )


# --- construction ----------------------------------------------------------------


def _torchvision_classifier(name: str, output_stride: int | None, weights: str | None) -> nn.Module:
    """Build a torchvision ResNet or MobileNetV3 classifier, dilated to `output_stride`."""
    import torchvision.models as tv_models

    kind = backbone_kind("torchvision", name)
    kwargs: dict[str, object] = {}
    if kind == "resnet" and output_stride is not None:
        kwargs["replace_stride_with_dilation"] = _RESNET_DILATION[output_stride]
    elif kind == "mobilenet_v3":
        kwargs["dilated"] = output_stride == 16
    model = tv_models.get_model(name, weights=None, **kwargs)
    if weights is not None:
        _load_classifier_weights(model, name, weights)
    return model


def _load_classifier_weights(model: nn.Module, name: str, weights: str) -> None:
    """Load ImageNet-style classifier weights (a file, or a torchvision tag from the torch hub cache)."""
    if is_weight_file(weights):
        path = weights
    else:
        member = _torchvision_weights(name, weights)
        path = str(torchvision_cache_file(member.url))  # type: ignore[attr-defined]
    state = read_state_dict(path)
    expected = set(model.state_dict())
    state = strip_known_prefix(state, expected)
    missing, unexpected = expected - set(state), set(state) - expected
    # A file saved from the trunk alone lacks the classifier, which is dropped anyway.
    missing = {key for key in missing if not key.startswith(("fc.", "classifier."))}
    if missing or unexpected:
        raise ValueError(
            f"weights file {path} does not match torchvision {name}: {key_mismatch_message(missing, unexpected)}; "
            f"give a state dict of torchvision's {name}"
        )
    model.load_state_dict(state, strict=False)


def _layered_levels(model: nn.Module, kind: BackboneKind) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """Return the children to keep and the child name of each level, finest first."""
    if kind == "resnet":
        children = [(n, m) for n, m in model.named_children() if n not in ("avgpool", "fc")]
        return children, ["layer1", "layer2", "layer3", "layer4"]
    features = model.features  # type: ignore[union-attr]
    # The blocks that start a new stride (torchvision marks them `_is_cn`), plus the stem and the last block.
    starts = [0] + [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)] + [len(features) - 1]
    return list(features.named_children()), [str(i) for i in starts]


# Options that let a timm model take any input size, tried in this order:
# transformers such as ViT and Swin assert a fixed input size unless
# `dynamic_img_size` is set, and ViT pads to its patch size with
# `dynamic_img_pad`. Convolutional models accept neither and need neither.
_DYNAMIC_SIZE_OPTIONS: tuple[dict[str, bool], ...] = (
    {"dynamic_img_size": True, "dynamic_img_pad": True},
    {"dynamic_img_size": True},
    {},
)
_accepted_size_options: dict[str, dict[str, bool]] = {}


def _timm_features(name: str, weights: str | None, in_chans: int, output_stride: int | None) -> nn.Module:
    kwargs: dict[str, object] = {"features_only": True}
    if output_stride is not None:
        kwargs["output_stride"] = output_stride
    known = _accepted_size_options.get(name)
    for options in (known,) if known is not None else _DYNAMIC_SIZE_OPTIONS:
        try:
            # The model class raises TypeError for an unknown option before it builds anything.
            model = _create_timm(name, weights, in_chans, **options, **kwargs)
        except TypeError as error:
            if "dynamic_img" in str(error):
                continue
            raise
        _accepted_size_options[name] = options
        return model
    raise AssertionError("the last option set is empty, so it cannot be rejected for a dynamic_img option")


def _timm_layout(model: nn.Module, maps: Sequence[Tensor]) -> str:
    declared = model.feature_info.channels()  # type: ignore[union-attr, operator]
    last = maps[-1]
    nhwc = str(getattr(model, "output_fmt", "NCHW")) == "NHWC" or (
        last.shape[1] != declared[-1] and last.shape[-1] == declared[-1]
    )
    return "NHWC" if nhwc else "NCHW"


def _meta_forward_eval(module: nn.Module, *args: Tensor) -> object:
    """Run `meta_forward` in eval mode, which is faster for BatchNorm on meta tensors, then restore the mode."""
    training = module.training
    module.eval()
    try:
        return meta_forward(module, *args)
    finally:
        module.train(training)


def _size_divisor(body: nn.Module, in_chans: int, description: str) -> int:
    """Return the smallest multiple that input sides must have for `body` to run.

    NOTE: one input size is probed, so a backbone that runs at it but fails
    at some other padded size would fail only when it meets that size.
    """
    for divisor in SIZE_DIVISORS:
        size = tuple(math.ceil(side / divisor) * divisor for side in PROBE_SIZE)
        try:
            _meta_forward_eval(body, torch.empty(1, in_chans, *size, device="meta"))
        # Backbones reject input sizes with assertions or with shape errors of their layers.
        except (AssertionError, RuntimeError, ValueError):
            continue
        return divisor
    sizes = ", ".join(str(d) for d in SIZE_DIVISORS)
    raise ValueError(
        f"{description} failed on a {PROBE_SIZE[0]}x{PROBE_SIZE[1]} input padded to a multiple of each of "
        f"{sizes} pixels, so it needs a fixed input size (or larger multiples) and cannot segment images of "
        "other sizes; choose a convolutional backbone, or a timm transformer (Swin, ViT), which accepts any size"
    )


@dataclass(frozen=True)
class LevelLayout:
    """The measured strides and channels of a backbone's levels at one output stride.

    Attributes:
        timm_layout: "NHWC" or "NCHW", the memory layout of a timm model's
            maps; empty for torchvision backbones.
        size_divisor: see `Levels.size_divisor`.
    """

    strides: tuple[int, ...]
    channels: tuple[int, ...]
    size_divisor: int
    timm_layout: str = ""


def create_levels(
    source: str,
    name: str,
    *,
    output_stride: int | None,
    weights: str | None = None,
    in_chans: int = 3,
    layout: LevelLayout | None = None,
    size_divisor: int | None = None,
) -> Levels:
    """Build a backbone's feature levels at `output_stride` (None: the backbone's own stride).

    Args:
        layout: the measurement of this backbone at this stride, when already
            made during validation; None measures it with meta forward
            passes. Channels and strides do not depend on `in_chans`.
        size_divisor: the input-side multiple, when known without `layout`;
            None probes it.

    Raises:
        StrideUnavailableError: the backbone cannot be dilated to `output_stride`.
        ValueError: the backbone runs only at a fixed input size.
    """
    kind = backbone_kind(source, name)
    description = f"{source} backbone {name}"
    children: list[str] | None = None
    timm_layout = ""
    if kind in ("resnet", "mobilenet_v3"):
        strides_allowed = (8, 16, 32) if kind == "resnet" else (16, 32)
        if output_stride is not None and output_stride not in strides_allowed:
            raise StrideUnavailableError(f"{description} cannot be dilated to output stride {output_stride}")
        try:
            model = _torchvision_classifier(name, output_stride, weights)
        except NotImplementedError as error:  # ResNets with basic blocks (ResNet-18/34) cannot dilate
            raise StrideUnavailableError(f"{description}: {error}") from None
        if in_chans != 3:
            replace_first_conv(model, in_chans)
        layers, children = _layered_levels(model, kind)
        body: nn.Module = TorchvisionLayers(layers, {child: child for child in children})
        size_divisor = 1
    elif kind == "timm":
        try:
            model = _timm_features(name, weights, in_chans, output_stride)
        except ZooError:  # a weights file that cannot be read or does not fit, with its own message
            raise
        # timm raises TypeError for models without an output_stride option and
        # AssertionError or ValueError for strides a model does not support.
        except (TypeError, AssertionError, ValueError, NotImplementedError) as error:
            if output_stride is None:
                raise
            raise StrideUnavailableError(f"{description} cannot be dilated to output stride {output_stride}: {error}") from None
        if layout is not None:
            timm_layout = layout.timm_layout
        else:
            maps = _meta_forward_eval(model, torch.empty(1, in_chans, *MEASURE_SIZE, device="meta"))
            timm_layout = _timm_layout(model, maps)  # type: ignore[arg-type]
        body = FeatureBackbone(TimmTrunk(model, timm_layout), "timm", None)
    else:
        if output_stride is not None:
            raise StrideUnavailableError(f"{description} has no dilation option")
        body = create_feature_backbone(source, name, weights=weights, in_chans=in_chans, input_size=MEASURE_SIZE)
    if layout is not None:
        return Levels(kind, body, children, list(layout.strides), list(layout.channels), layout.size_divisor)
    out = _meta_forward_eval(body, torch.empty(1, in_chans, *MEASURE_SIZE, device="meta"))
    maps = [out[child] for child in children] if children is not None else list(out)  # type: ignore[index, call-overload]
    channels = [m.shape[1] for m in maps]
    strides = [round(MEASURE_SIZE[0] / m.shape[-2]) for m in maps]
    if output_stride is not None and strides[-1] != output_stride:
        raise StrideUnavailableError(f"{description} gave output stride {strides[-1]} when {output_stride} was requested")
    if size_divisor is None:
        size_divisor = _size_divisor(body, in_chans, description)
    return Levels(kind, body, children, strides, channels, size_divisor, timm_layout)


# --- probing (validation) ------------------------------------------------------------


@functools.lru_cache(maxsize=128)
def _probe(source: str, name: str, output_stride: int | None) -> LevelLayout:
    # Dilation does not change which input sizes a backbone accepts, so the
    # size divisor is probed once, without dilation.
    divisor = None if output_stride is None else native_layout(source, name).size_divisor
    try:
        with parameters_on_meta():
            levels = create_levels(source, name, output_stride=output_stride, size_divisor=divisor)
    except ValueError:  # StrideUnavailableError and fixed-size backbones, with their own messages
        raise
    # Model constructors of timm and torchvision fail in many ways for models
    # that cannot return feature maps, and each becomes a manifest error.
    except Exception as error:
        raise ValueError(
            f"{source} backbone {name} cannot be built as a multi-level feature extractor "
            f"({type(error).__name__}: {error}); choose another backbone"
        ) from error
    return LevelLayout(tuple(levels.strides), tuple(levels.channels), levels.size_divisor, levels.timm_layout)


def native_layout(source: str, name: str) -> LevelLayout:
    """Return the layout of the backbone without dilation."""
    return _probe(source, name, None)


def _try_layout(source: str, name: str, output_stride: int) -> LevelLayout | None:
    native = native_layout(source, name)
    if output_stride == native.strides[-1]:
        return native
    if output_stride > native.strides[-1] or output_stride not in DILATED_STRIDES:
        return None
    if backbone_kind(source, name) == "torchvision":
        return None
    try:
        return _probe(source, name, output_stride)
    except StrideUnavailableError as error:
        logger.debug("%s:%s has no output stride %d (%s)", source, name, output_stride, error)
        return None


def available_strides(source: str, name: str) -> list[int]:
    """Return every output stride the backbone can give, ascending."""
    candidates = sorted({*DILATED_STRIDES, native_layout(source, name).strides[-1]})
    return [stride for stride in candidates if _try_layout(source, name, stride) is not None]


def default_stride(source: str, name: str, preferred: int) -> int:
    """Return the smallest stride of at least `preferred` the backbone can give, else its largest."""
    native = native_layout(source, name).strides[-1]
    for stride in sorted({*DILATED_STRIDES, native}):
        if stride >= preferred and _try_layout(source, name, stride) is not None:
            return stride
    return native


def layout_at(source: str, name: str, output_stride: int) -> LevelLayout:
    """Return the layout at `output_stride`.

    Raises:
        StrideUnavailableError: naming the strides the backbone can give.
    """
    layout = _try_layout(source, name, output_stride)
    if layout is not None:
        return layout
    choices = ", ".join(str(s) for s in available_strides(source, name))
    raise StrideUnavailableError(
        f"output_stride {output_stride} is not available for {source} backbone {name}; it can give: {choices} "
        "(dilation to 8 or 16 needs a backbone that supports it: torchvision ResNet-50 and deeper, "
        "torchvision MobileNetV3 (16 only), or a timm model that accepts output_stride); "
        f"set backbone.output_stride to one of {choices}, or remove it to use the decoder's default"
    )


def build_levels(source: str, name: str, output_stride: int, *, weights: str | None, in_chans: int) -> Levels:
    """Build the backbone at a validated `output_stride`, dilating only when it is below the native stride.

    The measurement made during validation is reused, so building runs no
    meta forward pass of its own.
    """
    native = native_layout(source, name)
    dilated = output_stride != native.strides[-1]
    return create_levels(
        source,
        name,
        output_stride=output_stride if dilated else None,
        weights=weights,
        in_chans=in_chans,
        layout=layout_at(source, name, output_stride),
    )
