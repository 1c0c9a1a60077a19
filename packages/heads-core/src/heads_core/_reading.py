"""Reading manifest files (YAML, JSON, TOML) and turning validation errors into ManifestError."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from pydantic import TypeAdapter, ValidationError

from .errors import ManifestError, ManifestProblem, ZooError
from .manifest import CHECK_BACKBONE_NAMES, CHECK_WEIGHTS_TAGS
from .plugins import get_plugin, installed_plugins

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_MANIFEST_BYTES = 1 << 20
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json", ".toml")


def _yaml_loader() -> type:
    import yaml

    class ManifestLoader(yaml.SafeLoader):
        """A safe loader that rejects aliases and duplicate keys."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.constructor.ConstructorError(
                    None, None, "YAML aliases (*name) are not allowed in manifests; write the value out", event.start_mark
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}; each key may appear once", key_node.start_mark
                    )
                seen.add(key) if isinstance(key, (str, int, float, bool)) else None
            return super().construct_mapping(node, deep=deep)

    return ManifestLoader


def _no_duplicate_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}; each key may appear once")
        result[key] = value
    return result


def read_manifest_data(path: str | Path) -> dict[str, Any]:
    """Read the raw mapping of a manifest file, before validation."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise ManifestError(source, [ManifestProblem("", "no such file or folder; check the path")])
    if path.suffix not in MANIFEST_SUFFIXES:
        raise ManifestError(source, [ManifestProblem("", f"unknown manifest type {path.suffix!r}; use one of {', '.join(MANIFEST_SUFFIXES)}")])
    try:
        size = path.stat().st_size
    except OSError as error:
        raise ManifestError(source, [ManifestProblem("", f"cannot read the file ({error.strerror})")]) from error
    if size > MAX_MANIFEST_BYTES:
        raise ManifestError(source, [ManifestProblem("", f"the file has {size} bytes; manifests are limited to {MAX_MANIFEST_BYTES}")])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ManifestError(source, [ManifestProblem("", f"not valid UTF-8 at byte {error.start}; save the file as UTF-8")]) from error
    if not text.strip():
        raise ManifestError(source, [ManifestProblem("", "the file is empty; a manifest needs at least name, version, task and backbone")])
    try:
        data = _parse(text, path.suffix)
    except Exception as error:  # each parser has its own error types
        detail = " ".join(str(error).split())  # parser messages span lines; a problem is one line
        raise ManifestError(source, [ManifestProblem("", f"cannot parse {path.suffix[1:].upper()}: {detail}")]) from error
    if not isinstance(data, Mapping):
        raise ManifestError(source, [ManifestProblem("", f"the top level must be a mapping of keys, got {type(data).__name__}")])
    return dict(data)


def _parse(text: str, suffix: str) -> Any:
    if suffix == ".json":
        return json.loads(text, object_pairs_hook=_no_duplicate_pairs)
    if suffix == ".toml":
        return tomllib.loads(text)
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def _format_location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and item.startswith(("function-", "constrained-")):
            continue
        else:
            # A key with control or line-break characters is quoted, so one problem stays one line.
            text = str(item) if str(item).isprintable() else repr(str(item))
            parts.append(("." if parts else "") + text)
    return "".join(parts)


def _shorten(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _allowed_range(model: Any, loc: tuple[Any, ...]) -> str | None:
    """Describe the range of the field at `loc` in a pydantic model, such as `1 <= num_classes <= 100000`.

    Nested model fields are followed, optional ones too. For a location
    through a list or tuple it returns None, and the message keeps pydantic's
    single limit.
    """
    field = None
    for item in loc:
        # An optional section, such as `Preprocess | None`, is followed into its model.
        model = next((member for member in (model, *get_args(model)) if hasattr(member, "model_fields")), model)
        fields = getattr(model, "model_fields", None)
        if not isinstance(item, str) or not isinstance(fields, dict) or item not in fields:
            return None
        field = fields[item]
        model = field.annotation
    if field is None:
        return None
    constraints = list(field.metadata)
    if not constraints:  # an optional field, `Annotated[float, Field(...)] | None`, keeps them inside the union
        for member in get_args(field.annotation):
            for extra in get_args(member)[1:]:
                constraints.extend(getattr(extra, "metadata", [extra]))
    lower = upper = ""
    for constraint in constraints:
        for name, sign in (("ge", "<="), ("gt", "<")):
            if getattr(constraint, name, None) is not None:
                lower = f"{getattr(constraint, name)} {sign} "
        for name, sign in (("le", "<="), ("lt", "<")):
            if getattr(constraint, name, None) is not None:
                upper = f" {sign} {getattr(constraint, name)}"
    return f"{lower}{loc[-1]}{upper}" if lower and upper else None


def problems_from_validation(error: ValidationError, model: Any = None) -> list[ManifestProblem]:
    """Convert each pydantic error into a ManifestProblem with the field path and the bad value.

    With the model that raised it, a value out of range also names the other
    limit, so one message shows the whole allowed range.
    """
    problems = []
    for item in error.errors(include_url=False):
        message = item["msg"].removeprefix("Value error, ")
        allowed = _allowed_range(model, item["loc"]) if item["type"] in _BOUND_ERRORS else None
        if item["type"] not in ("missing",) and "input" in item and not isinstance(item["input"], (dict, Mapping)):
            message += f" (got {_shorten(item['input'])})"
        if item["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling"
        if allowed is not None:
            message += f"; allowed: {allowed}"
        if item["type"] in ("tuple_type", "list_type") and type(item.get("input")) in (int, float):
            message += f"; write a list, such as [{item['input']}, {item['input']}]"
        if item["type"] == "string_type" and type(item.get("input")) in (int, float):
            # YAML reads an unquoted 1.0 as a number.
            message += f'; put the value in quotes to keep it text, such as "{item["input"]}"'
        problems.append(ManifestProblem(_format_location(item["loc"]), " ".join(message.split())))
    return problems


def validate_manifest(
    data: Mapping[str, Any],
    source: str = "<manifest>",
    *,
    check_backbone_names: bool = True,
    check_weights_tags: bool = True,
) -> Any:
    """Validate a manifest mapping and return the task's manifest instance.

    With `check_backbone_names=False` the backbone's name and pretrained tag
    are not looked up in its library, which spares importing timm or
    torchvision; with `check_weights_tags=False` only the tag is not. Use
    them for a manifest that was checked when its checkpoint was built.

    Raises:
        ManifestError: with one problem per invalid field.
    """
    if not isinstance(data, Mapping):
        raise ManifestError(source, [ManifestProblem("", f"a manifest must be a mapping, got {type(data).__name__}")])
    task = data.get("task")
    if task is None:
        choices = ", ".join(installed_plugins())
        raise ManifestError(source, [ManifestProblem("task", f"missing; choose one of: {choices}")])
    try:
        plugin = get_plugin(str(task))
    except ValueError as error:
        raise ManifestError(source, [ManifestProblem("task", str(error))]) from None
    try:
        context = {CHECK_BACKBONE_NAMES: check_backbone_names, CHECK_WEIGHTS_TAGS: check_weights_tags}
        return plugin.manifest_type.model_validate(dict(data), context=context)
    except ValidationError as error:
        raise ManifestError(source, problems_from_validation(error, plugin.manifest_type)) from None
    except ZooError as error:  # a missing optional package found while checking the backbone
        raise ManifestError(source, [ManifestProblem("backbone", str(error))]) from None


def load_manifest(path: str | Path) -> Any:
    """Read and validate a manifest file, including that the weights files it names exist.

    Relative weights paths start from the manifest's folder.
    """
    manifest = validate_manifest(read_manifest_data(path), str(path))
    from ._weights import is_weight_file

    folder = Path(path).parent
    problems = []
    for location, value in (("backbone.weights", manifest.backbone.weights), ("weights", getattr(manifest, "weights", None))):
        if isinstance(value, str) and is_weight_file(value) and not (folder / value).is_file():
            problems.append(ManifestProblem(
                location,
                f"weights file {value!r} not found (looked for {(folder / value).resolve()}); give the path of an "
                "existing file, relative to the manifest's folder",
            ))
    if problems:
        raise ManifestError(str(path), problems)
    return manifest


def manifest_json_schema() -> dict[str, Any]:
    """Return the JSON Schema of every manifest an installed task accepts."""
    from typing import Annotated, Union

    from pydantic import Field

    types = tuple(plugin.manifest_type for plugin in installed_plugins().values())
    union = Annotated[Union[types], Field(discriminator="task")]  # type: ignore[valid-type]  # noqa: UP007
    schema = TypeAdapter(union).json_schema()
    schema["title"] = "Model zoo manifest"
    return schema
