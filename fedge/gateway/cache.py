"""Release artifacts the gateway fetched from the cloud, kept on disk and served to its site.

An artifact is fetched once, however many devices want it at once (one download in flight per
content address, the others wait for it), resumed from what is already on disk after a cut,
checked against its SHA-256 (its content address) and only then renamed into place. The
devices still verify everything themselves against the cloud's release key: the cache holds
bytes, it cannot vouch for them.
"""

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from fedge.errors import ArtifactNotFoundError, VerificationError
from fedge.files import file_sha256, read_chunks
from fedge.log import logger

__all__ = ["ArtifactCache", "Fetch"]

#: ``fetch(sha256, offset)`` yields ``(offset, chunk)`` of the artifact from the cloud.
Fetch = Callable[[str, int], Iterator[tuple[int, bytes]]]

_CHUNK = 1 << 20


def _check(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ArtifactNotFoundError(f"not a sha256 content address: {sha256!r}")
    return sha256


class ArtifactCache:
    """Content-addressed artifacts under ``root``, filled from the cloud by ``fetch``."""

    def __init__(self, root: Path, fetch: Fetch) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._fetch = fetch
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetched = 0  # artifacts downloaded from the cloud by this process

    def path(self, sha256: str) -> Path:
        """Where the artifact lives once cached."""
        return self.root / _check(sha256)

    def has(self, sha256: str) -> bool:
        """Whether the artifact is cached (complete and checked)."""
        return self.path(sha256).is_file()

    def ensure(self, sha256: str) -> Path:
        """The cached artifact, fetched (or resumed) from the cloud first if it is not."""
        path = self.path(sha256)
        with self._guard:
            lock = self._locks.setdefault(sha256, threading.Lock())
        with lock:  # one download per artifact; the others find it cached
            if not path.is_file():
                self._download(sha256, path)
        return path

    def _download(self, sha256: str, path: Path) -> None:
        part = path.with_name(f"{sha256}.part")
        offset = part.stat().st_size if part.exists() else 0
        logger.info("fetching artifact %s from the cloud (from byte %d)", sha256[:12], offset)
        with open(part, "ab") as out:
            for at, data in self._fetch(sha256, offset):
                if at != offset:
                    raise VerificationError("length", f"unexpected chunk at offset {at}")
                out.write(data)
                offset += len(data)
            out.flush()
            os.fsync(out.fileno())
        if file_sha256(part) != sha256:
            part.unlink()  # start over next time: which chunk was bad cannot be told
            raise VerificationError(
                "sha256", f"the cloud's artifact {sha256[:12]} hashes otherwise"
            )
        os.replace(part, path)
        self.fetched += 1

    def read(self, sha256: str, *, offset: int, chunk_size: int = 0) -> Iterator[tuple[int, bytes]]:
        """``(offset, chunk)`` of a cached artifact from ``offset`` to its end."""
        path = self.path(sha256)
        length = path.stat().st_size
        if not 0 <= offset <= length:
            raise VerificationError("length", f"offset {offset} is outside the artifact")
        size = min(chunk_size, 2 * _CHUNK) if chunk_size > 0 else _CHUNK
        return read_chunks(path, offset, size)

    def length(self, sha256: str) -> int:
        """The length of a cached artifact."""
        return self.path(sha256).stat().st_size
