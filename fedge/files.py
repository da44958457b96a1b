"""Crash-safe file writes and file digests, shared by the device and the coordinator.

A write that must survive a power cut goes to a temporary file that is fsynced, renamed over
the target and followed by an fsync of the directory, so after a crash the path holds either
the old or the new content, never a mix.
"""

import hashlib
import os
from pathlib import Path

__all__ = ["atomic_write", "file_sha256", "fsync_dir"]


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
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o666 if mode is None else mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
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
