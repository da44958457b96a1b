"""Release artifacts the gateway fetched from the cloud, kept on disk and served to its site.

The cache is the cloud's kind of content-addressed store
(:class:`~fedge.release.artifacts.ArtifactStore`), filled by downloads from the cloud instead
of by publishing.

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

from fedge.errors import VerificationError
from fedge.files import file_sha256
from fedge.log import logger
from fedge.release.artifacts import ArtifactStore

__all__ = ["ArtifactCache", "Fetch"]

#: ``fetch(sha256, offset)`` yields ``(offset, chunk)`` of the artifact from the cloud.
Fetch = Callable[[str, int], Iterator[tuple[int, bytes]]]


class ArtifactCache(ArtifactStore):
    """The cloud's content-addressed artifacts under ``root``, filled by ``fetch``."""

    def __init__(self, root: Path, fetch: Fetch) -> None:
        super().__init__(root)
        self._fetch = fetch
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetched = 0  # artifacts downloaded from the cloud by this process

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
        path.parent.mkdir(exist_ok=True)
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
