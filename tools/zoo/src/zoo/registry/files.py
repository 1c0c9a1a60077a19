"""Temporary files beside their target, renamed into place once complete."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["create_temporary", "write_atomically"]


def _current_umask() -> int:
    # os.umask can only be read by setting it, so set it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def create_temporary(target: Path) -> tuple[int, Path]:
    """Create a hidden `.NAME.*.partial` file beside `target`; return its descriptor and path.

    mkstemp creates files readable only by their owner, so the mode is widened
    to what an ordinary file gets under the process umask (0644 under umask 022).
    """
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name[:64]}.", suffix=".partial", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_current_umask())
    return fd, Path(temporary)


def write_atomically(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a synced temporary file and a rename."""
    fd, temporary = create_temporary(target)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
