"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

The data goes to a temporary file in the target's folder, is flushed and fsynced, and
replaces the target with ``os.replace``. The folder is fsynced too, so the rename itself
survives a crash. Checkpoints, run metrics, caches and verification reports use it.

Example:
    >>> import tempfile, pathlib
    >>> from bqsam.atomic import write_text_atomic
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "report.md"
    >>> write_text_atomic(path, "all checks hold\\n")
    >>> path.read_text()
    'all checks hold\\n'
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["write_atomic", "write_bytes_atomic", "write_text_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[io.BufferedWriter], object]) -> None:
    """Call ``write(stream)`` on a temporary binary file, then rename it over ``path``.

    The parent folder is created when missing. On any error the temporary file is removed
    and the error re-raised, so ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    write_atomic(path, lambda stream: stream.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))
