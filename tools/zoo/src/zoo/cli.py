"""The `zoo` command. Heavy imports (torch, timm) happen inside commands, so `--help` stays fast."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Validate model manifests, build them into safetensors checkpoints, inspect and run them, publish and pull them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Output that goes to a file or pipe is not wrapped at rich's default of 80
# columns, so tables and paths stay whole in logs; COLUMNS still wins.
_PIPE_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(width=_PIPE_WIDTH)
errors = Console(stderr=True, width=_PIPE_WIDTH)

EXIT_FAILED = 1
EXIT_INVALID = 2
DEFAULT_OUT = Path("zoo-build")
REGISTRY_HELP = (
    "The default registry, for bare repository names: a folder of OCI image layouts, or oci://HOST:PORT/NAMESPACE (port and namespace optional). "
    "Defaults to $ZOO_REGISTRY, else ~/.cache/zoo/registry."
)
INSECURE_HELP = "Allow plain HTTP to a registry that is not on a loopback host (loopback hosts always use plain HTTP)."


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for package in ("zoo", "heads-core", "heads-detection", "heads-segmentation"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            parts.append(f"{package} not installed")
    print(", ".join(parts))
    raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the versions of zoo and the heads packages.")
    ] = False,
) -> None:
    """Validate model manifests, build them into safetensors checkpoints, inspect and run them, publish and pull them."""


def _fail(message: str, code: int = EXIT_FAILED) -> None:
    errors.print(f"[red]error:[/red] {message}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _human_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders of manifests.")],
) -> None:
    """Check manifests without building them; print one line per problem."""
    from heads_core import ManifestError, load_manifest

    from .building import find_manifests

    invalid = 0
    files = find_manifests(paths)
    if not files:
        _fail(f"no manifests (*.yaml, *.yml, *.json, *.toml) found in {', '.join(map(str, paths))}", EXIT_INVALID)
    for path in files:
        try:
            manifest = load_manifest(path)
        except ManifestError as error:
            invalid += 1
            for line in str(error).splitlines():
                errors.print(line, highlight=False, markup=False, soft_wrap=True)
            continue
        console.print(f"ok  {path} ({manifest.task}, {manifest.backbone.source}:{manifest.backbone.name})", highlight=False, soft_wrap=True)
    if invalid:
        raise typer.Exit(EXIT_INVALID)


@app.command()
def build(
    paths: Annotated[list[Path], typer.Argument(help="Manifest files or folders of manifests.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for checkpoints and zoo.lock.json.")] = DEFAULT_OUT,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Manifests built at once, each in its own process.")] = 1,
) -> None:
    """Build manifests into checkpoints; unchanged manifests are skipped."""
    from .building import find_manifests

    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder; give a folder for the checkpoints", EXIT_INVALID)
    sources = find_manifests(paths)
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        _fail(f"no such file: {', '.join(missing)}", EXIT_INVALID)
    if not sources:
        _fail(f"no manifests (*.yaml, *.yml, *.json, *.toml) found in {', '.join(map(str, paths))}", EXIT_INVALID)
    outcomes = _build_with_progress(sources, out, jobs)
    _print_summary(outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        first, *rest = outcome.message.splitlines() or [outcome.source]
        errors.print(f"failed: {first}" + (f" ({len(rest)} more lines below)" if rest else ""), markup=False, highlight=False, soft_wrap=True)
        for line in rest:
            errors.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_INVALID if all(o.invalid_manifest for o in failed) else EXIT_FAILED)


def _build_with_progress(sources: list[Path], out: Path, jobs: int) -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .building import run_build

    outcomes = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=errors, transient=True,
    ) as progress:
        task = progress.add_task("building", total=len(sources))
        for outcome in run_build(sources, out, jobs):
            outcomes.append(outcome)
            progress.update(task, advance=1, description=f"{outcome.status}: {outcome.source}")
    return outcomes


def _print_summary(outcomes: list) -> None:
    table = Table(title="zoo build")
    for column in ("manifest", "checkpoint", "status", "seconds", "size"):
        table.add_column(column, justify="right" if column in ("seconds", "size") else "left", overflow="fold")
    for o in outcomes:
        style = {"failed": "red", "built": "green"}.get(o.status, "")
        # A failed build wrote nothing, so its row names no file.
        checkpoint = "" if o.status == "failed" else o.checkpoint
        table.add_row(o.source, checkpoint, f"[{style}]{o.status}[/{style}]" if style else o.status,
                      f"{o.seconds:.2f}", _human_size(o.size) if o.size else "")
    console.print(table)


@app.command("list")
def list_checkpoints(
    target: Annotated[str | None, typer.Argument(help="A folder of checkpoints (default zoo-build), or a registry reference: oci://HOST:PORT for its repositories, oci://HOST:PORT/REPOSITORY, oci-layout:PATH, a layout folder, or a repository NAME in the default registry.")] = None,
    registry: Annotated[str | None, typer.Option("--registry", help=REGISTRY_HELP + " Without TARGET, list its repositories.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help=INSECURE_HELP)] = False,
) -> None:
    """List the checkpoints in a folder, the tags of a registry repository, or the repositories of a registry."""
    from .registry import RegistryError, default_registry, is_registry_root, looks_like_reference
    from .registry.layout import is_layout
    from .registry.reference import OCI_SCHEME, LayoutRoot, parse_registry

    try:
        if target is None and registry is None:
            _list_folder(DEFAULT_OUT)
        elif target is None:
            _list_repositories(default_registry(registry), insecure)
        elif target.startswith(OCI_SCHEME) and "/" not in target[len(OCI_SCHEME):].rstrip("/"):
            _list_repositories(parse_registry(target.rstrip("/")), insecure)
        elif is_layout(Path(target)) or (not Path(target).exists() and looks_like_reference(target)):
            _list_tags(target, registry, insecure)
        elif is_registry_root(Path(target)) and not any(Path(target).glob("*.safetensors")):
            _list_repositories(LayoutRoot(Path(target)), insecure)
        else:
            _list_folder(Path(target))
    except RegistryError as error:
        _fail(str(error), _registry_exit_code(error))


def _list_folder(folder: Path) -> None:
    from heads_core import ZooError, inspect_checkpoint

    if not folder.is_dir():
        from .registry import RegistryError, default_registry

        try:
            root = default_registry(None)
            published = f", or list what you published with `zoo list {getattr(root, 'path', root)}` (the default registry)"
        except RegistryError:
            published = ""
        _fail(f"{folder} is not a folder; build checkpoints with `zoo build PATH --out {folder}` first{published}", EXIT_INVALID)
    table = Table(title=str(folder))
    for column in ("checkpoint", "task", "backbone", "size"):
        table.add_column(column)
    for path in sorted(folder.glob("*.safetensors")):
        try:
            _, manifest = inspect_checkpoint(path)
        except ZooError as error:
            table.add_row(path.name, "[red]unreadable[/red]", str(error), "")
            continue
        table.add_row(path.name, manifest.task, f"{manifest.backbone.source}:{manifest.backbone.name}", _human_size(path.stat().st_size))
    console.print(table)


@app.command()
def inspect(
    target: Annotated[str, typer.Argument(help="A zoo checkpoint (.safetensors), or a registry reference with a tag or digest.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    registry: Annotated[str | None, typer.Option("--registry", help=REGISTRY_HELP)] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help=INSECURE_HELP)] = False,
) -> None:
    """Show a checkpoint's manifest, outputs, parameter count, size and sha256; for a reference, its artifact without the weights."""
    from .registry import looks_like_reference

    if not Path(target).exists() and looks_like_reference(target):
        _inspect_reference(target, as_json, registry, insecure)
        return
    from heads_core import ZooError

    from .lockfile import file_sha256

    checkpoint = Path(target)
    try:
        info = _checkpoint_summary(checkpoint)
    except ZooError as error:
        _fail(str(error), EXIT_INVALID)
    info["sha256"] = file_sha256(checkpoint)
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    manifest = info["manifest"]
    console.print(f"[bold]{checkpoint}[/bold]")
    for key in ("task", "format", "parameters", "tensors", "size", "sha256", "manifest_sha256"):
        value = _human_size(info[key]) if key == "size" else info[key]
        console.print(f"  {key:16} {value}", highlight=False)
    console.print(f"  {'backbone':16} {manifest['backbone']['source']}:{manifest['backbone']['name']}", highlight=False)
    console.print(f"  {'outputs':16} {json.dumps(info['outputs'])}", highlight=False, markup=False)
    console.print(f"  {'reinitialized':16} {', '.join(info['reinitialized']) or '-'}", highlight=False)
    console.print(f"  {'versions':16} {json.dumps(info['versions'])}", highlight=False, markup=False)
    console.print("  manifest:")
    console.print_json(json.dumps(manifest))


def _checkpoint_summary(checkpoint: Path) -> dict:
    from heads_core import inspect_checkpoint

    header, manifest = inspect_checkpoint(checkpoint)
    parameters = 0
    for entry in header.tensors.values():
        count = 1
        for dim in entry.shape:
            count *= dim
        parameters += count
    return {
        "task": manifest.task,
        "format": header.metadata["zoo.format"],
        "manifest": manifest.model_dump(mode="json"),
        "manifest_sha256": header.metadata.get("zoo.manifest_sha256"),
        "outputs": header.json_field("zoo.outputs"),
        "versions": header.json_field("zoo.versions", {}),
        "reinitialized": header.json_field("zoo.reinitialized", []),
        "parameters": parameters,
        "tensors": len(header.tensors),
        "size": checkpoint.stat().st_size,
    }


@app.command()
def schema() -> None:
    """Print the JSON Schema of manifests for every installed task."""
    from heads_core import manifest_json_schema

    print(json.dumps(manifest_json_schema(), indent=2, sort_keys=True))


@app.command()
def publish(
    checkpoint: Annotated[Path, typer.Argument(help="A zoo checkpoint (.safetensors).")],
    target: Annotated[str | None, typer.Argument(help="Where to publish: oci://HOST:PORT/REPOSITORY:TAG, oci-layout:PATH:TAG, a folder path, or NAME:TAG in the default registry; the repository, tag and port are optional. The repository defaults to the manifest's name and the tag to its version.")] = None,
    registry: Annotated[str | None, typer.Option("--registry", help=REGISTRY_HELP)] = None,
    force: Annotated[bool, typer.Option("--force", help="Move the tag when it already points to other content.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help=INSECURE_HELP)] = False,
) -> None:
    """Publish a checkpoint to a registry and print its digest reference; blobs the registry has are not sent again."""
    from heads_core import ZooError

    from .registry import RegistryError
    from .registry import publish as publish_checkpoint

    if not checkpoint.is_file():
        _fail(f"{checkpoint}: no such file; build it with `zoo build MANIFEST` first", EXIT_INVALID)
    try:
        with _transfer_progress() as progress:
            result = publish_checkpoint(checkpoint, target, registry=registry, force=force, insecure=insecure, progress=progress)
    except RegistryError as error:
        _fail(str(error), _registry_exit_code(error))
    except ZooError as error:
        _fail(str(error), EXIT_INVALID)
    except OSError as error:
        _fail(f"{checkpoint}: cannot read ({error.strerror})", EXIT_FAILED)
    if result.unchanged:
        errors.print(f"{result.reference} already points to this checkpoint", highlight=False, markup=False, soft_wrap=True)
    elif result.previous_digest:
        errors.print(f"published {checkpoint} as {result.reference} (moved from {result.previous_digest})", highlight=False, markup=False, soft_wrap=True)
    else:
        errors.print(f"published {checkpoint} as {result.reference}", highlight=False, markup=False, soft_wrap=True)
    errors.print(
        f"blobs: {result.uploaded_blobs} uploaded ({_human_size(result.uploaded_bytes)}), {result.present_blobs} already present",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    print(result.digest_reference)


@app.command()
def pull(
    reference: Annotated[str, typer.Argument(help="The artifact: oci://HOST:PORT/REPOSITORY:TAG, oci-layout:PATH:TAG, a layout folder with :TAG, or NAME:TAG in the default registry; @sha256:HEX may replace :TAG.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the checkpoint file.")] = Path("."),
    registry: Annotated[str | None, typer.Option("--registry", help=REGISTRY_HELP)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a file of the same name that has other content.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help=INSECURE_HELP)] = False,
) -> None:
    """Download a checkpoint, verify its sha256 and size, and print its path."""
    from .registry import RegistryError
    from .registry import pull as pull_checkpoint

    try:
        with _transfer_progress() as progress:
            result = pull_checkpoint(reference, out, registry=registry, force=force, insecure=insecure, progress=progress)
    except RegistryError as error:
        _fail(str(error), _registry_exit_code(error))
    except OSError as error:
        _fail(f"cannot write into {out} ({error.strerror})", EXIT_FAILED)
    if result.downloaded:
        errors.print(f"pulled {result.digest_reference} into {result.path}", highlight=False, markup=False, soft_wrap=True)
    else:
        errors.print(f"{result.path} already has the content of {result.digest_reference}", highlight=False, markup=False, soft_wrap=True)
    print(result.path)


def _registry_exit_code(error: Exception) -> int:
    from .registry import InvalidReferenceError

    return EXIT_INVALID if isinstance(error, InvalidReferenceError) else EXIT_FAILED


@contextlib.contextmanager
def _transfer_progress() -> Iterator[Callable[[str, int, int], None]]:
    """Show one transfer bar per blob on stderr; yield the callback that updates them."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bars: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=errors, transient=True) as progress:

        def update(label: str, done: int, total: int) -> None:
            if label not in bars:
                bars[label] = progress.add_task(label, total=total)
            progress.update(bars[label], completed=done)

        yield update


def _list_tags(target: str, registry: str | None, insecure: bool) -> None:
    from .registry import list_tags, parse_reference

    reference = parse_reference(target, registry=registry)
    repository = reference.with_version()
    table = Table(title=str(repository))
    for column in ("tag", "digest", "task", "version", "size"):
        table.add_column(column, overflow="fold")
    for info in list_tags(repository, insecure=insecure):
        if info.artifact is None:
            table.add_row(info.tag, info.digest, "[red]not a zoo checkpoint[/red]", info.problem, "")
            continue
        annotations = info.artifact.annotations
        table.add_row(
            info.tag,
            info.digest,
            annotations.get("zoo.task", ""),
            annotations.get("org.opencontainers.image.version", ""),
            _human_size(info.artifact.layer.size),
        )
    console.print(table)


def _list_repositories(root: Any, insecure: bool) -> None:
    from .registry import list_repositories

    table = Table(title=str(root))
    table.add_column("repository")
    for reference in list_repositories(root, insecure=insecure):
        table.add_row(str(reference))
    console.print(table)


def _inspect_reference(target: str, as_json: bool, registry: str | None, insecure: bool) -> None:
    from .registry import RegistryError, inspect_artifact

    try:
        info = inspect_artifact(target, registry=registry, insecure=insecure)
    except RegistryError as error:
        _fail(str(error), _registry_exit_code(error))
    artifact = info.artifact
    summary = {
        "reference": str(info.reference),
        "digest_reference": str(info.digest_reference),
        "digest": artifact.digest,
        "artifact_type": artifact.manifest.get("artifactType"),
        "annotations": artifact.annotations,
        "file": artifact.file_name,
        "size": artifact.layer.size,
        "sha256": artifact.layer.digest.partition(":")[2],
        "manifest": info.zoo_manifest,
    }
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return
    console.print(str(info.reference), style="bold", highlight=False, markup=False, soft_wrap=True)
    rows = [(key, _human_size(summary[key]) if key == "size" else summary[key]) for key in ("digest_reference", "artifact_type", "file", "size", "sha256")]
    rows += sorted(artifact.annotations.items())
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        console.print(f"  {key:{width}} {value}", highlight=False, markup=False, soft_wrap=True)
    console.print("  manifest:")
    console.print_json(json.dumps(info.zoo_manifest))


@app.command()
def predict(
    checkpoint: Annotated[str, typer.Argument(help="A zoo checkpoint file (.safetensors). Pull a registry reference with `zoo pull` first.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, TIFF, ...); 16-bit greyscale is scaled by 65535.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes shown per image (classification).")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    draw: Annotated[Path | None, typer.Option("--draw", help=(
        "Write the image with the prediction drawn (detection, segmentation); a missing folder is created. "
        "With several images, each drawing is named after DRAW's stem, a hyphen and the image's stem, "
        "adding the image's suffix where stems are equal and then a number where names are still equal: "
        "--draw out/x.png a.jpg a.png writes out/x-a-jpg.png and out/x-a-png.png."
    ))] = None,
) -> None:
    """Run a checkpoint on images and print what it predicts, with masks and boxes in the original image's pixels."""
    from heads_core import ZooError, get_plugin, load_model
    from PIL import Image, UnidentifiedImageError

    from .registry import looks_like_reference

    if not Path(checkpoint).exists() and looks_like_reference(checkpoint):
        _fail(
            f"{checkpoint}: no such file; predict takes a local checkpoint file, so pull a registry reference "
            f"first with `zoo pull {checkpoint}` and pass the path it prints",
            EXIT_INVALID,
        )
    try:
        loaded = load_model(Path(checkpoint))
    except ZooError as error:
        _fail(str(error), EXIT_INVALID)
    plugin = get_plugin(loaded.manifest.task)
    targets = _prepare_draw_targets(draw, images, plugin) if draw is not None else []
    results = []
    skipped = 0
    for index, image_path in enumerate(images):
        # One image that cannot be used is reported, and the others still run, as in zoo build.
        try:
            image = Image.open(image_path)
            image.load()
            tensor = plugin.prepare_image(image, loaded.manifest)
            prediction = _predict_image(plugin, loaded.model, tensor, loaded.manifest, top_k, (image.height, image.width))
        except (OSError, UnidentifiedImageError) as error:
            errors.print(f"error: {image_path}: cannot read the image ({error})", markup=False, highlight=False, soft_wrap=True)
            skipped += 1
            continue
        except ValueError as error:
            errors.print(f"error: {image_path}: {error}", markup=False, highlight=False, soft_wrap=True)
            skipped += 1
            continue
        results.append({"image": str(image_path), **prediction})
        if targets:
            target = targets[index]
            try:
                plugin.draw(image, prediction, loaded.manifest).save(target)
            except ValueError as error:
                _fail(str(error), EXIT_INVALID)
            except OSError as error:
                _fail(f"{target}: cannot write the drawing ({error.strerror or error})", EXIT_FAILED)
            results[-1]["drawn"] = str(target)
            # On stderr, so the predictions on stdout keep one format.
            errors.print(f"drew {image_path} into {target}", markup=False, highlight=False, soft_wrap=True)
        if not as_json:
            console.print(f"[bold]{image_path}[/bold]")
            for line in plugin.format_prediction(prediction, loaded.manifest):
                console.print(f"  {line}", highlight=False, markup=False)
    if as_json:
        print(json.dumps(results, indent=2))
    if skipped:
        raise typer.Exit(EXIT_INVALID)


def _predict_image(plugin: Any, model: Any, tensor: Any, manifest: Any, top_k: int, image_size: tuple[int, int]) -> dict:
    """Predict one prepared image, passing its original (height, width) to plugins whose `predict` takes `image_sizes`."""
    import inspect

    # The base TaskPlugin.predict has no `image_sizes`, but segmentation takes it to return masks at the image's size.
    if "image_sizes" in inspect.signature(plugin.predict).parameters:
        return plugin.predict(model, [tensor], manifest, top_k=top_k, image_sizes=[image_size])[0]
    return plugin.predict(model, [tensor], manifest, top_k=top_k)[0]


def _prepare_draw_targets(draw: Path, images: list[Path], plugin: Any) -> list[Path]:
    """Check --draw before any prediction runs, create its folder, and return one output path per image."""
    from heads_core import TaskPlugin
    from PIL import Image

    if type(plugin).draw is TaskPlugin.draw:
        _fail(f"task {plugin.task!r} has nothing to draw; drop --draw", EXIT_INVALID)
    Image.init()
    image_format = Image.registered_extensions().get(draw.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        written = f"{draw.suffix!r} files" if draw.suffix else "a file without a suffix"
        _fail(f"--draw {draw}: Pillow cannot write {written}; end the name with .png or .jpg", EXIT_INVALID)
    targets = _draw_targets(draw, images)
    inputs = {image.resolve(): image for image in images}
    for target in targets:
        if target.resolve() in inputs:
            _fail(f"--draw {draw} would overwrite the input image {inputs[target.resolve()]}; choose another name", EXIT_INVALID)
    try:
        draw.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"--draw {draw}: cannot create the folder {draw.parent} ({error.strerror or error})", EXIT_FAILED)
    return targets


def _draw_targets(draw: Path, images: list[Path]) -> list[Path]:
    """Name one drawing per image as the help of --draw describes, comparing names case-insensitively as macOS and Windows do."""
    from collections import Counter

    if len(images) == 1:
        return [draw]
    stem_counts = Counter(image.stem.casefold() for image in images)
    labels = [
        f"{image.stem}-{image.suffix.lstrip('.')}" if stem_counts[image.stem.casefold()] > 1 and image.suffix else image.stem
        for image in images
    ]
    label_counts = Counter(label.casefold() for label in labels)
    used_names: set[str] = set()
    targets = []
    for label in labels:
        unique = label
        if label_counts[label.casefold()] > 1:
            # The same name in two folders, or one image given twice, gets a number that no other name uses.
            number = 1
            while (unique := f"{label}-{number}").casefold() in used_names or unique.casefold() in label_counts:
                number += 1
        used_names.add(unique.casefold())
        targets.append(draw.with_name(f"{draw.stem}-{unique}{draw.suffix}"))
    return targets


def main() -> None:
    """Run the command line; exit 2 on bad input, 1 when work failed."""
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
