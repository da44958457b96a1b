"""Content-addressed artifacts on disk: ``root/<sha[:2]>/<sha>``, each written once.

An artifact is copied to a temporary file, fsynced and renamed under its SHA-256, so a crash
never leaves a half-written artifact under its content address.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedge.errors import ArtifactNotFoundError, ReleaseError
from fedge.files import read_chunks

__all__ = ["DEFAULT_CHUNK_SIZE", "MAX_CHUNK_SIZE", "ArtifactStore", "is_sha256"]

DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 2 * 1024 * 1024


def is_sha256(text: str) -> bool:
    """Whether ``text`` is a hex SHA-256 (64 lowercase hex digits)."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


class ArtifactStore:
    """The artifacts under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the artifact with this content address lives (it may not exist)."""
        if not is_sha256(sha256):
            raise ArtifactNotFoundError(f"not a sha256 content address: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def add(self, source: Path) -> tuple[str, int]:
        """Copy the file ``source`` into the store; ``(sha256, length)``."""
        if not Path(source).is_file():
            raise ReleaseError(f"artifact {source} does not exist or is not a file")
        with open(source, "rb") as src:
            return self.add_stream(iter(lambda: src.read(1 << 20), b""))

    def add_stream(
        self, blocks: Iterable[bytes | memoryview], *, sha256: str = ""
    ) -> tuple[str, int]:
        """Store the concatenated ``blocks``; ``(sha256, length)``.

        With ``sha256``, an artifact whose content hashes otherwise is refused (and not kept).
        """
        digest = hashlib.sha256()
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as out:
                for block in blocks:
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            sha, length = digest.hexdigest(), os.path.getsize(tmp_name)
            if length == 0:
                raise ReleaseError("an artifact must not be empty")
            if sha256 and sha != sha256:
                raise ReleaseError(f"the artifact's sha256 is {sha}, not the announced {sha256}")
            dest = self.path(sha)
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp_name, dest)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        return sha, length

    def length(self, sha256: str) -> int:
        """Length in bytes of a stored artifact."""
        path = self.path(sha256)
        if not path.is_file():
            raise ArtifactNotFoundError(f"no artifact {sha256}")
        return path.stat().st_size

    def read(
        self, sha256: str, *, offset: int = 0, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> Iterator[tuple[int, bytes]]:
        """``(offset, chunk)`` from ``offset`` to the end of the artifact.

        Checks happen at the call, not at the first ``next``, so a bad request fails at once.
        """
        length = self.length(sha256)
        if offset < 0 or offset > length:
            raise ReleaseError(f"offset {offset} is outside artifact of {length} bytes")
        size = min(max(chunk_size, 1), MAX_CHUNK_SIZE) if chunk_size else DEFAULT_CHUNK_SIZE
        return read_chunks(self.path(sha256), offset, size)

    def copy_to(self, sha256: str, dest: Path) -> None:
        """Copy an artifact out of the store (for tools and tests)."""
        shutil.copyfile(self.path(sha256), dest)
