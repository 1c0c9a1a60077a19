"""The manifest: a short YAML, JSON or TOML file that names a backbone and a task.

Manifests are pydantic v2 models that forbid unknown keys. The `task` field
selects the model class; heads-core defines classification, anomaly
detection and regression, and other packages add tasks through the
`heads_core.tasks` entry-point group (see `heads_core.plugins`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ._backbones import check_backbone_name, check_weights_tag, fixed_input_size, timm_input_size

__all__ = [
    "AnomalyManifest",
    "BackboneSpec",
    "ClassificationManifest",
    "Manifest",
    "Preprocess",
    "RegressionManifest",
    "canonical_json",
]

# Limits that keep a manifest from exhausting memory; each is far above what
# real models use.
MAX_CLASSES = 100_000
MAX_OUTPUTS = 10_000
MAX_INPUT_SIDE = 8192
MAX_IN_CHANS = 64
# Validation context keys: False skips looking backbone names, or pretrained tags, up in timm or torchvision.
CHECK_BACKBONE_NAMES = "check_backbone_names"
CHECK_WEIGHTS_TAGS = "check_weights_tags"

SafeName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$"),
    Field(description="lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"),
]
SafeVersion = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$"),
    Field(description="letters, digits, '.', '_', '+' and '-', up to 64 characters; also the registry tag"),
]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class StrictModel(BaseModel):
    """Base of every manifest section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        # pydantic turns true into 1 and "10" into 10; in a manifest those are slips, not numbers.
        if not isinstance(data, Mapping):
            return data
        slips = []
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None or not isinstance(value, (bool, str)) or not _number_only(field.annotation):
                continue
            kind = "a boolean" if isinstance(value, bool) else f"the text {value!r} (write it without quotes)"
            slips.append(f"{name} must be a number, not {kind}")
        if slips:
            raise PydanticCustomError("number_expected", "; ".join(slips))
        return data


class BackboneSpec(StrictModel):
    """The backbone: a timm or torchvision model name and how to initialise it.

    `weights` is None for random initialisation; "DEFAULT" for the library's
    default pretrained weights; a pretrained tag (a timm tag such as
    "a1_in1k", a torchvision enum member such as "IMAGENET1K_V2"); or the path
    of a safetensors or state-dict file, relative to the manifest's folder.
    """

    source: Literal["timm", "torchvision"]
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")]
    weights: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = None
    in_chans: Annotated[int, Field(ge=1, le=MAX_IN_CHANS)] = 3

    @model_validator(mode="after")
    def _known_name(self, info: ValidationInfo) -> BackboneSpec:
        # Reading a checkpoint's header skips this check, so it need not import timm or torchvision.
        context = info.context or {}
        if context.get(CHECK_BACKBONE_NAMES, True):
            check_backbone_name(self.source, self.name)
            if context.get(CHECK_WEIGHTS_TAGS, True):
                check_weights_tag(self.source, self.name, self.weights)
        return self


class Preprocess(StrictModel):
    """Image preprocessing: resize the shorter side, center-crop, normalise.

    `input_size` is (height, width) of the model input. `resize` is the
    shorter side before the crop; None means the crop size divided by 0.875.
    """

    input_size: tuple[
        Annotated[int, Field(ge=8, le=MAX_INPUT_SIDE)], Annotated[int, Field(ge=8, le=MAX_INPUT_SIDE)]
    ]
    resize: Annotated[int, Field(ge=8, le=MAX_INPUT_SIDE)] | None = None
    mean: tuple[Annotated[float, Field(ge=-1e3, le=1e3, allow_inf_nan=False)], ...]
    std: tuple[Annotated[float, Field(gt=0, le=1e3, allow_inf_nan=False)], ...]
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"

    @model_validator(mode="after")
    def _same_lengths(self) -> Preprocess:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}; give one per channel")
        shorter = min(self.input_size)
        if self.resize is not None and self.resize < shorter:
            raise ValueError(
                f"resize {self.resize} is smaller than input_size's shorter side {shorter}, so the crop would "
                f"stretch the image; give resize of at least {shorter}, or leave it out"
            )
        return self


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _per_channel(values: tuple[float, ...], in_chans: int) -> tuple[float, ...]:
    """Size RGB statistics for `in_chans`: their mean for grey, repeated for extra channels."""
    if in_chans == len(values):
        return values
    average = sum(values) / len(values)
    if in_chans < len(values):
        return (average,) * in_chans
    return values + (average,) * (in_chans - len(values))


def default_preprocess(backbone: BackboneSpec) -> Preprocess:
    """Return the backbone's pretrained preprocessing, sized for its `in_chans`."""
    size, mean, std, interpolation, crop_pct = (224, 224), IMAGENET_MEAN, IMAGENET_STD, "bilinear", 0.875
    if backbone.source == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(backbone.name)
        if cfg is not None:
            size = timm_input_size(backbone.name)
            mean, std = tuple(cfg.mean), tuple(cfg.std)
            interpolation = cfg.interpolation if cfg.interpolation in ("bilinear", "bicubic") else "bilinear"
            crop_pct = cfg.crop_pct or crop_pct
    return Preprocess(
        input_size=size,
        resize=math.floor(size[0] / crop_pct),
        mean=_per_channel(tuple(mean), backbone.in_chans),
        std=_per_channel(tuple(std), backbone.in_chans),
        interpolation=interpolation,
    )


class ManifestBase(StrictModel):
    """Fields every manifest has, whatever its task.

    `seed` seeds the random initialisation, so the same manifest always
    gives a byte-identical checkpoint.
    """

    name: SafeName
    version: SafeVersion
    description: Annotated[str, StringConstraints(max_length=4000)] = ""
    task: str
    backbone: BackboneSpec
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    preprocess: Preprocess | None = None

    @model_validator(mode="before")
    @classmethod
    def _complete_preprocess(cls, data: Any) -> Any:
        """Fill the required preprocess fields that a preprocess block leaves out from the backbone's defaults."""
        if not isinstance(data, Mapping) or not isinstance(data.get("preprocess"), Mapping):
            return data
        preprocess_type = _model_in(cls.model_fields["preprocess"].annotation)
        backbone_type = _model_in(cls.model_fields["backbone"].annotation)
        if preprocess_type is None or backbone_type is None:
            return data
        block = data["preprocess"]
        missing = [name for name, field in preprocess_type.model_fields.items() if field.is_required() and name not in block]
        if not missing:
            return data
        try:
            backbone = backbone_type.model_validate(data.get("backbone"))
        except (ValidationError, ValueError, TypeError):
            return data  # the backbone's own problems are reported by the full validation
        defaults = default_preprocess(backbone)
        filled: dict[str, Any] = {name: getattr(defaults, name) for name in missing}
        for name, other in (("mean", "std"), ("std", "mean")):
            # Sized like the statistics that are given, so a count that differs from in_chans is named as such.
            if name in missing and isinstance(block.get(other), (list, tuple)) and block[other]:
                rgb = IMAGENET_MEAN if name == "mean" else IMAGENET_STD
                filled[name] = _per_channel(getattr(defaults, name)[:3] if backbone.in_chans >= 3 else rgb, len(block[other]))
        if "interpolation" in preprocess_type.model_fields and "interpolation" not in block:
            filled["interpolation"] = defaults.interpolation
        if "resize" in preprocess_type.model_fields and "input_size" in missing and "resize" not in block:
            filled["resize"] = defaults.resize  # the pretrained crop; a given input_size keeps resize at input_size / 0.875
        return {**data, "preprocess": {**block, **filled}}

    # Whether the model runs at preprocess.input_size as it is, so a backbone
    # with a fixed input size (ViT, Swin) must get exactly that size.
    runs_at_input_size: ClassVar[bool] = False

    @model_validator(mode="after")
    def _fill_preprocess(self, info: ValidationInfo) -> ManifestBase:
        if self.preprocess is None:
            object.__setattr__(self, "preprocess", default_preprocess(self.backbone))
        assert self.preprocess is not None
        # Like the name, the size was checked when a checkpoint was built, and looking it up imports timm.
        check = self.runs_at_input_size and (info.context or {}).get(CHECK_BACKBONE_NAMES, True)
        needed = fixed_input_size(self.backbone.source, self.backbone.name) if check else None
        if needed is not None and tuple(self.preprocess.input_size) != needed:
            raise ValueError(
                f"{self.backbone.source} {self.backbone.name} accepts only {needed[0]}x{needed[1]} inputs, but "
                f"preprocess.input_size is {list(self.preprocess.input_size)}; set it to {list(needed)} or leave it out"
            )
        if len(self.preprocess.mean) != self.backbone.in_chans:
            raise ValueError(
                f"preprocess.mean and preprocess.std have {len(self.preprocess.mean)} values but "
                f"backbone.in_chans is {self.backbone.in_chans}; give one value per input channel"
            )
        return self


def _number_only(annotation: Any) -> bool:
    """Tell whether a field's annotation allows numbers (int, float) and None only."""
    leaves: set[Any] = set()

    def collect(node: Any) -> None:
        arguments = get_args(node)
        if not arguments:
            leaves.add(node)
        for argument in arguments:
            if isinstance(argument, type) or get_args(argument):
                collect(argument)
            elif not hasattr(argument, "metadata"):  # a Literal's value, unlike Annotated's field metadata
                leaves.add(type(argument))

    collect(annotation)
    leaves.discard(type(None))
    return bool(leaves) and leaves <= {int, float}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """Return the pydantic model class in a field's annotation, such as `Preprocess | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _check_names(names: list[str] | None, count: int, names_field: str, count_field: str) -> None:
    if names is None:
        return
    if len(names) != count:
        raise ValueError(f"{names_field} has {len(names)} entries but {count_field} is {count}; make them agree")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{names_field} repeats {', '.join(map(repr, duplicates))}; names must be unique")


class ClassificationManifest(ManifestBase):
    """Image classification: `num_classes` softmax logits."""

    task: Literal["classification"]
    runs_at_input_size: ClassVar[bool] = True
    num_classes: Annotated[int, Field(ge=1, le=MAX_CLASSES)]
    class_names: list[Label] | None = Field(default=None, max_length=MAX_CLASSES)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2

    @model_validator(mode="after")
    def _names_match(self) -> ClassificationManifest:
        _check_names(self.class_names, self.num_classes, "class_names", "num_classes")
        return self


class AnomalyManifest(ManifestBase):
    """Anomaly detection: one logit per image; sigmoid gives the anomaly probability."""

    task: Literal["anomaly_detection"]
    runs_at_input_size: ClassVar[bool] = True
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5


class RegressionManifest(ManifestBase):
    """Regression: `num_outputs` raw values per image."""

    task: Literal["regression"]
    runs_at_input_size: ClassVar[bool] = True
    num_outputs: Annotated[int, Field(ge=1, le=MAX_OUTPUTS)] = 1
    output_names: list[Label] | None = Field(default=None, max_length=MAX_OUTPUTS)
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2

    @model_validator(mode="after")
    def _names_match(self) -> RegressionManifest:
        _check_names(self.output_names, self.num_outputs, "output_names", "num_outputs")
        return self


# Any validated manifest; the concrete class depends on the task.
Manifest = ManifestBase


def canonical_json(manifest: ManifestBase) -> str:
    """Serialise a validated manifest as canonical JSON: sorted keys, no spaces."""
    data = manifest.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


