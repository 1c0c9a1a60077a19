"""Zoo checkpoints: one safetensors file with the weights and the manifest.

Format version 1. The file is plain safetensors, so any safetensors reader
opens it. Tensors are the model's state dict, contiguous, with tensors that
share storage written once. The header's `__metadata__` contains strings:

- `zoo.format`: "1"
- `zoo.manifest`: the validated manifest as canonical JSON
- `zoo.manifest_sha256`: sha256 of that JSON
- `zoo.task`, `zoo.outputs` (JSON): what the outputs mean
- `zoo.versions` (JSON): torch, torchvision, timm and heads-* versions used
- `zoo.reinitialized` (JSON list): tensors initialised anew while adapting
  pretrained weights
- `zoo.aliases` (JSON object): tensor names that share another tensor's data
- `zoo.measured_shapes` (JSON list, optional): the output shapes of the
  build's meta-device measurements, replayed by loads under the same
  `zoo.versions` so that loading does not measure again

Writing is deterministic (sorted header, fixed tensor order, no timestamps or
paths) and atomic (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import CheckpointError

__all__ = ["CheckpointHeader", "read_header", "read_tensors", "write_checkpoint"]

FORMAT_VERSION = "1"
MAX_HEADER_BYTES = 100 * 1024 * 1024
# The data section starts on this boundary, and tensors whose size is a
# multiple of it come first, so they keep the alignment of torch's own
# allocator. CPU kernels can take different code paths on less aligned
# memory, and then a loaded model would not reproduce a built model's outputs
# bit for bit.
ALIGNMENT = 64

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    """The dtype, shape and byte range of one tensor in the file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


@dataclass(frozen=True)
class CheckpointHeader:
    """The parsed header of a safetensors file.

    Attributes:
        path: the file.
        metadata: the `__metadata__` strings (empty when the file has none).
        tensors: each tensor's dtype, shape and byte range within the data section.
        data_start: the file offset of the data section.
    """

    path: Path
    metadata: dict[str, str]
    tensors: dict[str, TensorEntry]
    data_start: int

    @property
    def is_zoo_checkpoint(self) -> bool:
        """Whether the file carries zoo metadata."""
        return "zoo.format" in self.metadata

    def json_field(self, key: str, default: Any = None) -> Any:
        """Parse a JSON-valued metadata entry."""
        if key not in self.metadata:
            return default
        try:
            return json.loads(self.metadata[key])
        except json.JSONDecodeError as error:
            raise CheckpointError(self.path, f"metadata {key!r} is not valid JSON ({error})") from None


def _deduplicate(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Keep one name per tensor view shared by several names; return the others as aliases."""
    kept: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for name in sorted(state):
        tensor = state[name]
        if tensor.device.type == "meta":
            raise ValueError(f"tensor {name!r} is on the meta device and has no data to save")
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() > 0 and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        kept[name] = tensor
    return kept, aliases


def _write_order(tensor: Tensor, name: str) -> tuple[bool, int, str]:
    """Sort key: sizes that are multiples of ALIGNMENT first, then by element size, then name."""
    size = tensor.numel() * tensor.element_size()
    return (size % ALIGNMENT != 0, -tensor.element_size(), name)


def write_checkpoint(path: str | Path, state: Mapping[str, Tensor], metadata: Mapping[str, str]) -> str:
    """Write tensors and metadata to `path` atomically and return the file's sha256.

    Tensors are made contiguous (channels-last tensors included) and moved to
    the CPU. The data section starts at a multiple of ALIGNMENT and contains
    first the tensors whose size is a multiple of ALIGNMENT, then the rest by
    element size, so every tensor is aligned to at least its element size.
    """
    path = Path(path)
    tensors, aliases = _deduplicate(state)
    meta = dict(metadata)
    if aliases:
        meta["zoo.aliases"] = json.dumps(aliases, sort_keys=True, separators=(",", ":"))
    order = sorted(tensors, key=lambda n: _write_order(tensors[n], n))
    header: dict[str, Any] = {"__metadata__": dict(sorted(meta.items()))}
    offset = 0
    for name in order:
        tensor = tensors[name]
        if tensor.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store")
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPE_NAMES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    header_bytes += b" " * (-(8 + len(header_bytes)) % ALIGNMENT)

    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(header_bytes, [tensors[name] for name in order])
    digest = hashlib.sha256()
    # hashlib releases the interpreter lock on large buffers, so the digest is
    # computed on a second core while this thread writes and waits for fsync.
    hashing = threading.Thread(target=_hash_all, args=(digest, chunks), name="checkpoint-sha256", daemon=True)
    hashing.start()
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=0) as file:
            _reserve(fd, sum(memoryview(chunk).nbytes for chunk in chunks))
            for chunk in chunks:
                _write_all(file, chunk)
            os.fsync(file.fileno())
        os.chmod(temporary, _default_file_mode())  # mkstemp creates files readable by the owner only
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    finally:
        hashing.join()
    return digest.hexdigest()


def _chunks(header_bytes: bytes, tensors: list[Tensor]) -> list[memoryview | bytes]:
    """Return the file's bytes in order: header length, header, then each tensor's data.

    Tensors on the CPU that are contiguous are viewed, not copied; others are
    copied once and held until the file is written.
    """
    chunks: list[memoryview | bytes] = [struct.pack("<Q", len(header_bytes)), header_bytes]
    for tensor in tensors:
        data = tensor.detach().to("cpu").contiguous()
        if data.numel() > 0:
            chunks.append(memoryview(data.view(-1).view(torch.uint8).numpy()))
    return chunks


def _reserve(fd: int, size: int) -> None:
    """Allocate the file's blocks before writing.

    A full disk then fails here, before any data is written, and the file
    system allocates the blocks in one go instead of while flushing.
    """
    if size == 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _hash_all(digest: Any, chunks: list[memoryview | bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


def _write_all(file: Any, chunk: memoryview | bytes) -> None:
    """Write every byte of `chunk`; an unbuffered write may take only part of it."""
    view = memoryview(chunk).cast("B")
    while view:
        written = file.write(view)
        view = view[written:]


def _default_file_mode() -> int:
    """Return the mode a plain `open(path, "w")` would give: 0o666 without the umask bits."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def read_header(path: str | Path) -> CheckpointHeader:
    """Parse and check the header of a safetensors file without reading tensor data.

    Raises:
        CheckpointError: the file is missing, truncated, or its header is
            malformed or describes data that is not in the file.
    """
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise CheckpointError(path, f"the file has {file_size} bytes, too short for a safetensors header")
            (header_size,) = struct.unpack("<Q", prefix)
            if header_size > MAX_HEADER_BYTES or header_size > file_size - 8:
                raise CheckpointError(
                    path,
                    f"header length {header_size} is larger than the file ({file_size} bytes) or the "
                    f"{MAX_HEADER_BYTES}-byte limit; the file is truncated or not safetensors",
                )
            raw = file.read(header_size)
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except IsADirectoryError:
        raise CheckpointError(path, "is a folder, not a checkpoint file") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"the header is not valid JSON ({error}); the file is damaged or not safetensors") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "the header is not a JSON object; the file is damaged or not safetensors")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(path, "__metadata__ must map names to strings")
    data_start = 8 + header_size
    tensors = {name: _parse_entry(path, name, entry) for name, entry in header.items()}
    _check_layout(path, tensors, file_size - data_start)
    return CheckpointHeader(path, dict(metadata), tensors, data_start)


def _parse_entry(path: Path, name: str, entry: Any) -> TensorEntry:
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(path, f"tensor {name!r} has a malformed header entry")
    dtype = DTYPES.get(entry["dtype"])
    if dtype is None:
        raise CheckpointError(path, f"tensor {name!r} has unsupported dtype {entry['dtype']!r}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape):
        raise CheckpointError(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and o >= 0 for o in offsets)):
        raise CheckpointError(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    numel = 1
    for dim in shape:
        numel *= dim
    begin, end = offsets
    if end - begin != numel * torch.empty(0, dtype=dtype).element_size():
        raise CheckpointError(path, f"tensor {name!r}: data_offsets {offsets} do not match shape {shape} and dtype {entry['dtype']}")
    return TensorEntry(dtype, tuple(shape), begin, end)


def _check_layout(path: Path, tensors: Mapping[str, TensorEntry], data_size: int) -> None:
    end = 0
    for name, entry in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if entry.begin != end:
            raise CheckpointError(path, f"tensor {name!r} starts at byte {entry.begin} of the data, expected {end}; the header is corrupt")
        end = entry.end
    if end != data_size:
        raise CheckpointError(
            path,
            f"the header describes {end} bytes of tensor data but the file holds {data_size}; "
            "the file is truncated or has trailing bytes",
        )


def read_tensors(header: CheckpointHeader) -> dict[str, Tensor]:
    """Map the file into memory and return its tensors as views of the mapping.

    The mapping is private: writing to a tensor changes memory, never the file.
    Tensors that do not start on an ALIGNMENT boundary in the file are copied
    into freshly allocated memory, so every tensor is as aligned as one torch
    allocates. In files written by `write_checkpoint`, only small tensors are
    copied.
    """
    file_size = header.data_start + max((e.end for e in header.tensors.values()), default=0)
    if file_size == header.data_start:
        return {name: torch.empty(entry.shape, dtype=entry.dtype) for name, entry in header.tensors.items()}
    storage = torch.UntypedStorage.from_file(str(header.path), shared=False, nbytes=file_size)
    tensors = {}
    for name, entry in header.tensors.items():
        item_size = torch.empty(0, dtype=entry.dtype).element_size()
        start = header.data_start + entry.begin
        if start % ALIGNMENT:
            raw = torch.empty(0, dtype=torch.uint8).set_(storage, start, (entry.end - entry.begin,))
            tensors[name] = raw.clone().view(entry.dtype).reshape(entry.shape)
            continue
        tensors[name] = torch.empty(0, dtype=entry.dtype).set_(storage, start // item_size, entry.shape)
    return tensors
