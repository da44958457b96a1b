"""Crash-safe file writes and file digests, shared by the device and the coordinator.

A write that must survive a power cut goes to a temporary file that is fsynced, renamed over
the target and followed by an fsync of the directory, so after a crash the path holds either
the old or the new content, never a mix.
"""

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "file_sha256", "fsync_dir", "read_chunks"]

# The process's umask, read once at import (reading it means setting it, which is not
# thread-safe later): files made through mkstemp get the permissions a plain open would give.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically: temp file, fsync, rename, fsync directory.

    ``mode`` sets the file's permissions before any byte is written (e.g. ``0o600`` for a key).
    """
    path = Path(path)
    # A name of its own per write: two writers never share (or clobber) a temporary file.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    fsync_dir(path.parent)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's content."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_chunks(path: Path, offset: int, size: int) -> Iterator[tuple[int, bytes]]:
    """``(offset, block)`` pairs of the file ``path`` from byte ``offset``, ``size`` at a time."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        while block := handle.read(size):
            yield offset, block
            offset += len(block)
