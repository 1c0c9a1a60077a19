"""Pretrained weights from local caches and files; nothing here downloads."""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .errors import CheckpointError, WeightsNotFoundError

logger = logging.getLogger(__name__)

WEIGHT_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_PREFIXES = ("module.", "_orig_mod.", "model.", "state_dict.")


def is_weight_file(weights: str) -> bool:
    """Tell whether a manifest's `weights` value names a file instead of a tag."""
    return weights.endswith(WEIGHT_FILE_SUFFIXES) or "/" in weights or os.sep in weights


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a safetensors file or a pickle, never running code.

    Pickles are read with `weights_only=True`. A dict that wraps the state dict
    under `state_dict` or `model` (as training scripts save them) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(str(path), [str(path.resolve())], "give the path of an existing weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(path, f"not a readable safetensors file ({error})") from error
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for bad pickles
        raise CheckpointError(path, _pickle_problem(error)) from error
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(path, "does not contain a state dict (a mapping of names to tensors)")
    return dict(loaded)


# Terminal colour codes, which torch puts in some messages.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def first_line_of(error: Exception) -> str:
    """Return the first line of an error's message, without terminal colour codes."""
    lines = _ANSI_ESCAPE.sub("", str(error)).strip().splitlines()
    return lines[0] if lines else ""


def _pickle_problem(error: Exception) -> str:
    """Explain why torch.load with weights_only=True could not read a file."""
    fix = "give a safetensors file or a plain state dict saved with torch.save(model.state_dict(), path)"
    python_object = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if python_object:
        return (
            f"holds Python objects besides tensors ({python_object.group(1)}; a whole model saved with "
            "torch.save(model), for example), which are not loaded because unpickling them could run code; "
            + fix
        )
    if isinstance(error, pickle.UnpicklingError):
        return f"is damaged or not a PyTorch weights file (UnpicklingError); {fix}"
    return f"cannot be read as a weights-only state dict ({type(error).__name__}: {first_line_of(error)}); {fix}"


def strip_known_prefix(state: Mapping[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """Remove a wrapper prefix such as `module.` when the bare keys then match exactly."""
    keys = set(state)
    if keys == expected:
        return dict(state)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in keys):
            bare = {k[len(prefix) :]: v for k, v in state.items()}
            if set(bare) == expected:
                return bare
    return dict(state)


def key_mismatch_message(missing: set[str], unexpected: set[str], limit: int = 20) -> str:
    """Describe missing and unexpected keys, each sorted, the longest lists shortened."""

    def show(keys: set[str]) -> str:
        ordered = sorted(keys)
        shown = ", ".join(ordered[:limit])
        return shown + (f", ... ({len(ordered) - limit} more)" if len(ordered) > limit else "")

    parts = []
    if missing:
        parts.append(f"missing keys ({len(missing)}): {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys ({len(unexpected)}): {show(unexpected)}")
    return "; ".join(parts)


def torchvision_cache_file(url: str) -> Path:
    """Return where torch hub keeps the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def hf_cache_candidates(repo_id: str) -> tuple[list[str], str | None]:
    """Look for a Hugging Face weight file of `repo_id` in the local cache only.

    Returns:
        The places searched, and the path found or None.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    # Read the environment at call time, so a cache set after import is honoured.
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else constants.HF_HUB_CACHE
    )
    searched = []
    for filename in ("model.safetensors", "pytorch_model.bin"):
        # The cache lookup reads the snapshot that refs/main names, as huggingface_hub does.
        searched.append(f"{cache}/models--{repo_id.replace('/', '--')}/snapshots/<the revision in refs/main>/{filename}")
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
        if isinstance(found, str):
            return searched, found
    return searched, None


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt an RGB convolution kernel of shape (O, 3, kH, kW) to `in_chans` inputs.

    One channel gets the sum over RGB, so a grey image equal to each RGB plane
    gives the same response. More channels repeat R, G, B cyclically, scaled by
    3 / in_chans so the expected activation stays the same.
    """
    if weight.shape[1] == in_chans:
        return weight
    dtype = weight.dtype
    weight = weight.float()
    if in_chans == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeats = -(-in_chans // weight.shape[1])
        adapted = weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)
    return adapted.to(dtype)
