"""Writing files so that a reader sees the old file or the new one, never half of one.

One helper for every file the package writes (run records, reports, plots, cached data): the
content goes to a scratch file beside the target, is flushed to disk, and is renamed into place.
The scratch file is created with mode 0o666 and the process umask applied, as `open()` would, so
a report written here has the same permissions as any other file the user writes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["write_atomic", "write_atomic_with"]


def write_atomic(path: str | os.PathLike[str], content: bytes) -> Path:
    """Write `content` to `path` atomically (parent folders are made); returns the path."""
    return write_atomic_with(path, lambda stream: stream.write(content))


def write_atomic_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> Path:
    """Call `write` on a binary stream that becomes `path` only once it is whole and synced."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    # O_EXCL: never write through a file (or a link) someone else put there.
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    return target
