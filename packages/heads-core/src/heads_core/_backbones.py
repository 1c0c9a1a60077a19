"""Backbones from timm and torchvision, each returning NCHW feature maps.

`create_backbone` gives the final map that a classifier pools, or for timm
models whose head does more than average pooling, timm's pooled pre-logits
features as an (N, C, 1, 1) map;
`create_feature_backbone` gives one map per stride level for necks such as a
feature pyramid. Channels and strides are measured with a forward pass on the
meta device, never read from library metadata.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._imports import require
from ._meta import meta_forward
from ._weights import (
    adapt_input_conv,
    first_line_of,
    hf_cache_candidates,
    is_weight_file,
    key_mismatch_message,
    read_state_dict,
    strip_known_prefix,
    torchvision_cache_file,
)
from .errors import CheckpointError, WeightsNotFoundError

logger = logging.getLogger(__name__)

SOURCES = ("timm", "torchvision")
DEFAULT_INPUT_SIZE = (224, 224)


@dataclass(frozen=True)
class TorchvisionFamily:
    """How to take the feature trunk out of one family of torchvision classifiers.

    Attributes:
        prefixes: model names that belong to the family.
        stages: dotted names of the submodules run in order, or the name of a
            container whose children are run in order (ending in `.*`).
        removed: attributes deleted from the model (pooling and classifier).
        classifier: the linear layer that follows global average pooling in the
            original model, copied into a head of the same size, or None when
            the original classifier is more than pooling and one linear layer.
        final: extra step on the last map: "relu" (DenseNet), "norm_nhwc" (Swin),
            "tokens" (ViT) or "" for none.
    """

    prefixes: tuple[str, ...]
    stages: tuple[str, ...]
    removed: tuple[str, ...]
    classifier: str | None
    final: str = ""
    nhwc: bool = False


TORCHVISION_FAMILIES = (
    TorchvisionFamily(
        ("resnet", "resnext", "wide_resnet"),
        ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"),
        ("avgpool", "fc"),
        "fc",
    ),
    TorchvisionFamily(("regnet",), ("stem", "trunk_output.*"), ("avgpool", "fc"), "fc"),
    TorchvisionFamily(("mobilenet_v2",), ("features.*",), ("classifier",), "classifier.1"),
    TorchvisionFamily(("efficientnet",), ("features.*",), ("avgpool", "classifier"), "classifier.1"),
    TorchvisionFamily(("mobilenet_v3",), ("features.*",), ("avgpool", "classifier"), None),
    TorchvisionFamily(("convnext",), ("features.*",), ("avgpool", "classifier"), None),
    TorchvisionFamily(("densenet",), ("features.*",), ("classifier",), "classifier", final="relu"),
    TorchvisionFamily(("vgg",), ("features.*",), ("avgpool", "classifier"), None),
    TorchvisionFamily(("mnasnet",), ("layers.*",), ("classifier",), "classifier.1"),
    TorchvisionFamily(
        ("shufflenet",), ("conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"), ("fc",), "fc"
    ),
    TorchvisionFamily(("maxvit",), ("stem", "blocks.*"), ("classifier",), None),
    TorchvisionFamily(
        ("swin",), ("features.*",), ("avgpool", "flatten", "head", "permute"), "head", final="norm", nhwc=True
    ),
    TorchvisionFamily(("vit",), (), ("heads",), None, final="tokens"),
)


def torchvision_family(name: str) -> TorchvisionFamily:
    """Return the family of a torchvision classification model name."""
    for family in TORCHVISION_FAMILIES:
        if name.startswith(family.prefixes):
            return family
    known = ", ".join(p for f in TORCHVISION_FAMILIES for p in f.prefixes)
    raise ValueError(
        f"torchvision backbone {name!r} is not supported as a feature trunk; supported families: "
        f"{known}; use source: timm for other architectures"
    )


# --- names ---------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def available_backbones(source: str) -> tuple[str, ...]:
    """Return every model name `source` can build, sorted."""
    if source == "timm":
        timm = require("timm", "a timm backbone")
        return tuple(sorted(timm.list_models()))
    tv_models = require("torchvision.models", "a torchvision backbone")
    names = tv_models.list_models(module=tv_models)
    return tuple(sorted(n for n in names if n.startswith(tuple(p for f in TORCHVISION_FAMILIES for p in f.prefixes))))


def check_backbone_name(source: str, name: str) -> None:
    """Raise ValueError naming close matches when `name` is not a model of `source`."""
    if source == "timm":
        timm = require("timm", "a timm backbone")
        if timm.is_model(name):
            return
    elif name in available_backbones(source):
        return
    if source == "torchvision":
        tv_models = require("torchvision.models", "a torchvision backbone")
        if name in tv_models.list_models(module=tv_models):
            families = sorted({prefix.rstrip("_") for family in TORCHVISION_FAMILIES for prefix in family.prefixes})
            raise ValueError(
                f"torchvision {name!r} is not supported as a backbone; the supported families are "
                f"{', '.join(families)}, or use a timm model (source: timm)"
            )
    bare = name.split(".", 1)[0]
    close = difflib.get_close_matches(bare, available_backbones(source), n=5, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else f"; list the choices with {source}'s list_models()"
    raise ValueError(f"unknown {source} backbone {name!r}{hint}")


# --- modules ---------------------------------------------------------------


def _tokens_to_map(tokens: Tensor, image_size: tuple[int, int], prefix_tokens: int) -> Tensor:
    """Turn (N, prefix + H*W, C) transformer tokens into an (N, C, H, W) map."""
    tokens = tokens[:, prefix_tokens:]
    n, length, channels = tokens.shape
    height = max(1, round(math.sqrt(length * image_size[0] / image_size[1])))
    width = length // height
    if height * width != length:
        raise ValueError(
            f"cannot arrange {length} patch tokens into a grid for an input of {image_size[0]}x{image_size[1]}"
        )
    return tokens.transpose(1, 2).reshape(n, channels, height, width)


class TimmTrunk(nn.Module):
    """A timm model without its classifier; `forward` returns `forward_features` as NCHW.

    Layouts: "NCHW", "NHWC" and "NLC" (tokens) describe what
    `forward_features` returns. "pooled" is for models whose classifier
    head does more than average the map and apply a linear layer: ConvNeXt's
    head normalises the pooled features, MobileNetV3's applies `conv_head`,
    ViT's picks the class token. For those, `forward` returns the model's
    pre-logits features as an (N, C, 1, 1) map.
    A head's pooling leaves that map unchanged, so its linear layer gets the
    same input as timm's classifier.
    """

    def __init__(self, model: nn.Module, layout: str) -> None:
        super().__init__()
        self.model = model
        self.layout = layout

    def forward(self, x: Tensor) -> Tensor:
        features = self.model.forward_features(x)
        if self.layout == "pooled":
            return self.model.forward_head(features, pre_logits=True)[:, :, None, None]
        if self.layout == "NHWC":
            return features.permute(0, 3, 1, 2)
        if self.layout == "NLC":
            return _tokens_to_map(features, x.shape[-2:], getattr(self.model, "num_prefix_tokens", 0))
        return features


class TorchvisionTrunk(nn.Module):
    """A torchvision classifier without pooling and classifier, returning NCHW maps."""

    def __init__(self, model: nn.Module, family: TorchvisionFamily) -> None:
        super().__init__()
        self.model = model
        self.family = family
        self.stage_names = self._expand_stages(model, family.stages)

    @staticmethod
    def _expand_stages(model: nn.Module, stages: Sequence[str]) -> list[str]:
        names = []
        for stage in stages:
            if stage.endswith(".*"):
                container = stage[:-2]
                names += [f"{container}.{child}" for child, _ in model.get_submodule(container).named_children()]
            else:
                names.append(stage)
        return names

    def forward_stages(self, x: Tensor) -> list[Tensor]:
        """Return the NCHW output of every stage, in order."""
        if self.family.final == "tokens":
            return [self._vit_map(x)]
        outputs = []
        for index, name in enumerate(self.stage_names):
            x = self.model.get_submodule(name)(x)
            last = index == len(self.stage_names) - 1
            out = x
            if last and self.family.final == "relu":
                out = F.relu(out)
            if last and self.family.final == "norm":
                out = self.model.norm(out)
            if self.family.nhwc:
                out = out.permute(0, 3, 1, 2)
            outputs.append(out)
        return outputs

    def _vit_map(self, x: Tensor) -> Tensor:
        tokens = self.model._process_input(x)
        class_token = self.model.class_token.expand(tokens.shape[0], -1, -1)
        tokens = self.model.encoder(torch.cat([class_token, tokens], dim=1))
        return _tokens_to_map(tokens, x.shape[-2:], prefix_tokens=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_stages(x)[-1]


class TorchvisionPreLogits(nn.Module):
    """A torchvision classifier whose last linear layer is an identity; `forward` gives an (N, C, 1, 1) map.

    The model's own forward runs, with its pooling and the classifier's hidden
    layers, so a head's pooling leaves the map unchanged and its linear layer
    gets the same input as torchvision's last layer.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)[:, :, None, None]


class FeatureBackbone(nn.Module):
    """A backbone that returns one NCHW map per selected stride level.

    Attributes:
        channels: channels of each returned map, measured.
        strides: input size divided by each map's size, measured.
    """

    def __init__(self, trunk: nn.Module, source: str, stage_indices: Sequence[int] | None) -> None:
        super().__init__()
        self.trunk = trunk
        self.source = source
        self.stage_indices = list(stage_indices) if stage_indices is not None else None
        self.channels: list[int] = []
        self.strides: list[int] = []

    def forward(self, x: Tensor) -> list[Tensor]:
        if self.source == "timm":
            maps = self.trunk.model(x)
            return [m.permute(0, 3, 1, 2) for m in maps] if self.trunk.layout == "NHWC" else list(maps)
        stages = self.trunk.forward_stages(x)
        assert self.stage_indices is not None
        return [stages[i] for i in self.stage_indices]


# --- construction ------------------------------------------------------------


@dataclass
class PretrainedClassifier:
    """The original classifier's weights, for a head of matching size."""

    weight: Tensor
    bias: Tensor | None


def _transforms_after_pooling(model: nn.Module) -> bool:
    """Tell whether a timm model's classifier head does more than pool and apply one linear layer.

    timm's NormMlpClassifierHead (ConvNeXt) and ClNormMlpClassifierHead
    (MambaOut, channels-last) normalise after pooling, and both may add a
    hidden layer. MobileNetV3 and GhostNet apply `conv_head` to the pooled
    features, which timm shows as a `head_hidden_size` other than
    `num_features`, as does concatenating average and max pooling.
    """
    head = getattr(model, "head", None)
    norm = getattr(head, "norm", None)
    pools = hasattr(head, "global_pool") or hasattr(head, "pool_type")
    if pools and isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity):
        return True
    hidden, features = getattr(model, "head_hidden_size", None), getattr(model, "num_features", None)
    return isinstance(hidden, int) and isinstance(features, int) and hidden != features


def _timm_layout(model: nn.Module, size: tuple[int, int], in_chans: int) -> tuple[str, int]:
    """Return how TimmTrunk reads the model's features, and their channel count.

    A model whose `forward_features` returns one image map, and whose head
    only pools and applies a linear layer, gives that map ("NCHW" or "NHWC").
    Every other model gives timm's pre-logits features ("pooled"): token
    models, whose head picks the class token or normalises after pooling,
    models returning several maps, and heads that transform pooled features.
    """
    probe = torch.empty(1, in_chans, *size, device="meta")
    features = None
    if not _transforms_after_pooling(model):
        features = meta_forward(_ForwardFeatures(model), probe)
        if isinstance(features, Tensor) and features.dim() == 4:
            num_features = getattr(model, "num_features", None)
            nhwc = features.shape[1] != num_features and features.shape[-1] == num_features
            if str(getattr(model, "output_fmt", None)) == "NHWC" or nhwc:
                return "NHWC", features.shape[-1]
            return "NCHW", features.shape[1]
    if isinstance(features, Tensor):  # tokens: only the head is left to run
        pooled = meta_forward(_PreLogits(model), features)
    else:
        pooled = meta_forward(TimmTrunk(model, "pooled"), probe)
    if not isinstance(pooled, Tensor) or pooled.dim() != 4:
        shape = tuple(pooled.shape[:-2]) if isinstance(pooled, Tensor) else type(pooled).__name__
        raise ValueError(
            f"timm {type(model).__name__}.forward_head(pre_logits=True) returned {shape}; "
            "an image-level head needs an (N, C) tensor, so choose another backbone"
        )
    return "pooled", pooled.shape[1]


class _PreLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        return self.model.forward_head(features, pre_logits=True)[:, :, None, None]


class _ForwardFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)


def timm_input_size(name: str) -> tuple[int, int]:
    """Return the input size of a timm model's pretrained configuration."""
    timm = require("timm", "a timm backbone")
    cfg = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    if cfg is None or not getattr(cfg, "input_size", None):
        return DEFAULT_INPUT_SIZE
    return tuple(cfg.input_size[-2:])  # type: ignore[return-value]


def fixed_input_size(source: str, name: str) -> tuple[int, int] | None:
    """Return the only input size a backbone accepts, or None when it takes any size.

    timm declares this as `fixed_input_size` in the pretrained configuration
    (ViT, Swin, ...). torchvision's ViT and MaxViT check the input size in
    their forward pass; both are built for 224x224 without pretrained weights.
    The build checks the size again with a forward pass on the meta device.
    """
    if source == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(name)
        if cfg is not None and getattr(cfg, "fixed_input_size", False):
            height, width = cfg.input_size[-2:]
            return int(height), int(width)
        return None
    if name.startswith(("vit_", "maxvit")):
        return (224, 224)
    return None


def _timm_pretrained_kwargs(name: str, weights: str | None) -> tuple[str, dict]:
    """Return the timm model name with tag and the create_model arguments that load `weights`."""
    if weights is None:
        return name, {"pretrained": False}
    if is_weight_file(weights):
        if not Path(weights).is_file():  # timm itself raises FileNotFoundError without a message
            raise WeightsNotFoundError(weights, [str(Path(weights).resolve())], "give the path of an existing weights file")
        return name, {"pretrained": True, "pretrained_cfg_overlay": {"file": weights}}
    full_name, cfg = _timm_tagged(name, weights)
    repo = cfg.hf_hub_id
    searched: list[str] = []
    found = None
    if repo:
        searched, found = hf_cache_candidates(repo)
    if found is None:
        raise WeightsNotFoundError(
            f"{full_name!r} (timm)",
            searched or [f"no Hugging Face repository is set for {full_name}"],
            "download them once with huggingface_hub on a networked machine, set HF_HUB_CACHE to the cache "
            "folder, or give the file path as weights",
        )
    return full_name, {"pretrained": True, "pretrained_cfg_overlay": {"file": found}}


def _timm_tagged(name: str, weights: str) -> tuple[str, object]:
    """Return the timm model name with the pretrained tag `weights` and its pretrained configuration."""
    timm = require("timm", "a timm backbone")
    full_name = name if weights in ("default", "DEFAULT") or "." in name else f"{name}.{weights}"
    try:
        cfg = timm.get_pretrained_cfg(full_name, allow_unregistered=False)
    except RuntimeError:  # timm raises this for a tag that a known model does not have
        cfg = None
    if cfg is None:
        architecture = name.split(".")[0]
        tags = [tagged.partition(".")[2] for tagged in timm.list_pretrained(f"{architecture}.*")]
        choices = f"choose one of: {', '.join(tags)}" if tags else f"timm has no pretrained tags for {architecture}"
        raise ValueError(f"unknown timm pretrained tag {weights!r} for {architecture}; {choices}, or give a weights file path")
    return full_name, cfg


def check_weights_tag(source: str, name: str, weights: str | None) -> None:
    """Raise when `weights` is a pretrained tag that the library does not have for `name`.

    Files and missing weights are not checked here: a file's path is relative
    to the manifest's folder, and the build looks for it.
    """
    if weights is None or is_weight_file(weights):
        return
    if source == "timm":
        _timm_tagged(name, weights)
    else:
        _torchvision_member(name, weights)


def _create_timm(name: str, weights: str | None, in_chans: int, **kwargs: object) -> nn.Module:
    timm = require("timm", "a timm backbone")
    full_name, pretrained_kwargs = _timm_pretrained_kwargs(name, weights)
    logger.info("creating timm model %s (weights: %s)", full_name, weights or "random")
    try:
        return timm.create_model(full_name, in_chans=in_chans, **pretrained_kwargs, **kwargs)
    except Exception as error:
        if not pretrained_kwargs.get("pretrained"):
            raise
        file = pretrained_kwargs["pretrained_cfg_overlay"]["file"]
        classes = None if "num_classes" in kwargs else _file_classifier_size(timm, full_name, file)
        if classes is None:
            # For a file that does not fit, timm passes on the raw torch or safetensors error, so explain it here.
            raise _timm_weights_problem(timm, full_name, file, error) from error
    # A fine-tuned file: its classifier has another class count than the library's default. The pretrained
    # configuration gets the same count, because timm drops a classifier whose count differs from it.
    overlay = {**pretrained_kwargs["pretrained_cfg_overlay"], "num_classes": classes}
    try:
        return timm.create_model(
            full_name, in_chans=in_chans, num_classes=classes, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs
        )
    except Exception as error:
        raise _timm_weights_problem(timm, full_name, file, error) from error


def _file_classifier_size(timm: Any, name: str, file: str) -> int | None:
    """Return the class count of the classifier in a timm weights file when it differs from the model's default."""
    cfg = timm.get_pretrained_cfg(name)
    classifier = getattr(cfg, "classifier", None) if cfg is not None else None
    if isinstance(classifier, (list, tuple)):
        classifier = classifier[0]
    if not isinstance(classifier, str):
        return None
    state = read_state_dict(file)  # raises a CheckpointError of its own for an unreadable file
    weight = strip_known_prefix(state, set()).get(f"{classifier}.weight")
    if weight is None or weight.ndim != 2 or weight.shape[0] == getattr(cfg, "num_classes", None):
        return None
    return int(weight.shape[0])


def _timm_weights_problem(timm: object, name: str, file: str, error: Exception) -> CheckpointError:
    """Explain why timm could not load `file` into model `name`, naming the file and what differs."""
    state = read_state_dict(file)  # raises a CheckpointError of its own for an unreadable file
    with torch.device("meta"):
        expected = {key: tuple(value.shape) for key, value in timm.create_model(name).state_dict().items()}
    state = strip_known_prefix(state, set(expected))
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    if missing or unexpected:
        return CheckpointError(
            file,
            f"does not fit timm {name}; is it a file for another model? {key_mismatch_message(missing, unexpected, 5)}",
        )
    resized = sorted(key for key in expected if tuple(state[key].shape) != expected[key])
    problem = f"timm could not load it into {name} ({type(error).__name__}: {first_line_of(error)})"
    if resized:
        first = resized[0]
        problem += (
            f"; {len(resized)} tensors have other shapes, such as {first}: {list(state[first].shape)} in the file, "
            f"{list(expected[first])} in the model"
        )
    return CheckpointError(file, problem)


def _create_torchvision(name: str, weights: str | None, in_chans: int) -> nn.Module:
    tv_models = require("torchvision.models", "a torchvision backbone")
    if weights is None:
        model = tv_models.get_model(name, weights=None)
    elif is_weight_file(weights):
        model = tv_models.get_model(name, weights=None)
        state = read_state_dict(weights)
        expected = model.state_dict()
        state = strip_known_prefix(state, set(expected))
        missing, unexpected = set(expected) - set(state), set(state) - set(expected)
        if missing or unexpected:
            raise CheckpointError(
                weights,
                f"does not fit torchvision {name}; is it a file for another model? "
                f"{key_mismatch_message(missing, unexpected, 5)}",
            )
        resized = sorted(key for key in expected if state[key].shape != expected[key].shape)
        final = _last_linear(model)
        if resized and set(resized) <= {f"{final}.weight", f"{final}.bias"}:
            # A fine-tuned file: its classifier has another class count than the library's default.
            model = tv_models.get_model(name, weights=None, num_classes=state[f"{final}.weight"].shape[0])
        elif resized:
            first = resized[0]
            raise CheckpointError(
                weights,
                f"does not fit torchvision {name}: {len(resized)} tensors have other shapes, such as {first}: "
                f"{list(state[first].shape)} in the file, {list(expected[first].shape)} in the model",
            )
        model.load_state_dict(state)
    else:
        model = tv_models.get_model(name, weights=_torchvision_weights(name, weights))
    if in_chans != 3:
        replace_first_conv(model, in_chans)
    return model


def _torchvision_member(name: str, weights: str) -> Any:
    """Return the member of torchvision's weights enum of `name` that `weights` names ("DEFAULT" resolved)."""
    tv_models = require("torchvision.models", "a torchvision backbone")
    enum = tv_models.get_model_weights(name)
    member_name = weights.rsplit(".", 1)[-1]
    if member_name == "DEFAULT" or member_name == "default":
        return enum.DEFAULT
    members = {m.name: m for m in enum}
    if member_name not in members:
        raise ValueError(
            f"unknown torchvision weights {weights!r} for {name}; choose one of: " + ", ".join(["DEFAULT", *members])
        )
    return members[member_name]


def _torchvision_weights(name: str, weights: str) -> object:
    member = _torchvision_member(name, weights)
    enum = type(member)
    path = torchvision_cache_file(member.url)
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{enum.__name__}.{member.name}",
            [str(path)],
            "put the file there (TORCH_HOME sets the folder), or give the file path as weights",
        )
    return member


def replace_first_conv(model: nn.Module, in_chans: int) -> str:
    """Replace the first 3-channel convolution of `model` by one taking `in_chans` inputs.

    The kernel is adapted with `adapt_input_conv`. Returns the convolution's name.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            new = nn.Conv2d(
                in_chans,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups if module.groups == 1 else in_chans,
                module.bias is not None,
                module.padding_mode,
                device=module.weight.device,
                dtype=module.weight.dtype,
            )
            with torch.no_grad():
                new.weight.copy_(adapt_input_conv(module.weight.detach(), in_chans))
                if module.bias is not None:
                    new.bias.copy_(module.bias.detach())
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
            return name
    raise ValueError("the backbone has no 3-channel convolution to adapt to in_chans")


def _pop_classifier(model: nn.Module, dotted: str | None) -> PretrainedClassifier | None:
    if dotted is None:
        return None
    try:
        layer = model.get_submodule(dotted)
    except AttributeError:
        return None
    if not isinstance(layer, nn.Linear) or layer.weight.device.type == "meta":
        return None
    bias = None if layer.bias is None else layer.bias.detach().clone()
    return PretrainedClassifier(layer.weight.detach().clone(), bias)


def create_backbone(
    source: str, name: str, *, weights: str | None = None, in_chans: int = 3, pre_logits: bool = True
) -> tuple[nn.Module, int, PretrainedClassifier | None]:
    """Build the feature trunk of a classifier.

    Args:
        source: "timm" or "torchvision".
        name: the library's model name.
        weights: None for random initialisation, a pretrained tag, or a file path.
        in_chans: input channels; the first convolution is adapted when not 3.
        pre_logits: for torchvision families whose classifier is more than one
            linear layer (MobileNetV3, ConvNeXt, VGG, MaxViT, ViT), keep
            everything up to the last linear layer, so the trunk gives the
            classifier's pre-logits features as an (N, C, 1, 1) map. False
            gives the feature trunk without pooling and classifier.

    Returns:
        The trunk, whose forward returns the final (N, C, H, W) map, or
        (N, C, 1, 1) pre-logits features (see TimmTrunk); C, measured; and the pretrained linear classifier when the original
        model had one after global average pooling and weights were loaded.
    """
    if source == "timm":
        # Without weights there is no classifier to keep, so timm need not build one.
        model = _create_timm(name, weights, in_chans, **({} if weights else {"num_classes": 0}))
        classifier = model.pretrained_cfg.get("classifier") if weights else None
        if isinstance(classifier, (list, tuple)):
            classifier = classifier[0]
        pretrained = _pop_classifier(model, classifier)
        model.reset_classifier(0)
        layout, channels = _timm_layout(model, timm_input_size(name), in_chans)
        return TimmTrunk(model, layout), channels, pretrained
    if source != "torchvision":
        raise ValueError(f"unknown backbone source {source!r}; choose one of: {', '.join(SOURCES)}")
    family = torchvision_family(name)
    model = _create_torchvision(name, weights, in_chans)
    probe = torch.empty(1, in_chans, *DEFAULT_INPUT_SIZE, device="meta")
    if family.classifier is None and pre_logits:
        final = _last_linear(model)
        pretrained = _pop_classifier(model, final) if weights else None
        owner_name, _, attribute = final.rpartition(".")
        setattr(model.get_submodule(owner_name) if owner_name else model, attribute, nn.Identity())
        pre_logits_trunk = TorchvisionPreLogits(model)
        out = meta_forward(pre_logits_trunk, probe)
        return pre_logits_trunk, out.shape[1], pretrained
    pretrained = _pop_classifier(model, family.classifier) if weights else None
    for attribute in family.removed:
        if hasattr(model, attribute):
            delattr(model, attribute)
    trunk = TorchvisionTrunk(model, family)
    out = meta_forward(trunk, probe)
    return trunk, out.shape[1], pretrained


def _last_linear(model: nn.Module) -> str:
    """Return the dotted name of a torchvision classifier's last linear layer, its output layer."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"torchvision {type(model).__name__} has no linear classifier layer")
    return names[-1]


def create_feature_backbone(
    source: str,
    name: str,
    *,
    weights: str | None = None,
    in_chans: int = 3,
    levels: Sequence[int] | None = None,
    input_size: tuple[int, int] | None = None,
    timm_kwargs: Mapping[str, object] | None = None,
) -> FeatureBackbone:
    """Build a backbone that returns one NCHW map per stride level.

    Args:
        levels: which stride levels to return, counted from 0 at the finest
            level the backbone has; None returns every level.
        input_size: the size used to measure channels and strides.
        timm_kwargs: extra `timm.create_model` arguments for a timm backbone,
            such as `dynamic_img_size=True` or `output_stride=16`.

    The returned module's `channels` and `strides` describe its outputs.
    """
    size = input_size or (timm_input_size(name) if source == "timm" else DEFAULT_INPUT_SIZE)
    if source == "timm":
        kwargs: dict[str, object] = {"features_only": True, **(timm_kwargs or {})}
        if levels is not None:
            kwargs["out_indices"] = tuple(levels)
        try:
            model = _create_timm(name, weights, in_chans, **kwargs)
        except IndexError as error:
            available = len(_create_timm(name, None, in_chans, features_only=True).feature_info)
            raise ValueError(
                f"feature levels {list(levels or [])} do not exist in {name}; it has levels 0 to {available - 1}"
            ) from error
        maps = meta_forward(model, torch.empty(1, in_chans, *size, device="meta"))
        declared = model.feature_info.channels()
        nhwc = str(getattr(model, "output_fmt", "NCHW")) == "NHWC" or (
            maps[-1].shape[1] != declared[-1] and maps[-1].shape[-1] == declared[-1]
        )
        backbone = FeatureBackbone(TimmTrunk(model, "NHWC" if nhwc else "NCHW"), "timm", None)
    elif source == "torchvision":
        trunk, _, _ = create_backbone(source, name, weights=weights, in_chans=in_chans, pre_logits=False)
        stages = meta_forward(_AllStages(trunk), torch.empty(1, in_chans, *size, device="meta"))
        boundaries = _level_boundaries([s.shape[-2:] for s in stages], size)
        chosen = boundaries if levels is None else [_pick_level(boundaries, level, name) for level in levels]
        backbone = FeatureBackbone(trunk, "torchvision", chosen)
    else:
        raise ValueError(f"unknown backbone source {source!r}; choose one of: {', '.join(SOURCES)}")
    maps = meta_forward(backbone, torch.empty(1, in_chans, *size, device="meta"))
    backbone.channels = [m.shape[1] for m in maps]
    backbone.strides = [round(size[0] / m.shape[-2]) for m in maps]
    return backbone


class _AllStages(nn.Module):
    def __init__(self, trunk: TorchvisionTrunk) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.trunk.forward_stages(x)


def _level_boundaries(shapes: Sequence[torch.Size], size: tuple[int, int]) -> list[int]:
    """Return the index of the last stage at each stride, finest first."""
    boundaries: list[int] = []
    for index, shape in enumerate(shapes):
        stride = size[0] / shape[0]
        if index + 1 < len(shapes) and size[0] / shapes[index + 1][0] == stride:
            continue
        if stride >= 2:
            boundaries.append(index)
    return boundaries


def _pick_level(boundaries: list[int], level: int, name: str) -> int:
    if not 0 <= level < len(boundaries):
        raise ValueError(
            f"feature level {level} does not exist in {name}; it has levels 0 to {len(boundaries) - 1}"
        )
    return boundaries[level]
