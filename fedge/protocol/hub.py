"""The model hub's handlers, shared by the cloud and a site: who asks, manifests, downloads.

A hub request may name a device id, but only its own: the identity is the authenticated caller
(the mTLS certificate's device), unless the backend says the caller speaks for the device
named (a site gateway for its site's devices). Downloads are capped (:class:`DownloadSlots`): a
device beyond the cap is refused at once with :class:`~fedge.errors.BusyError`
(``RESOURCE_EXHAUSTED`` plus the standard ``grpc-retry-pushback-ms`` hint) instead of queueing
on a worker thread the other RPCs need.
"""

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from fedge.errors import BusyError, ConfigError, PayloadError, PermissionDeniedError
from fedge.protocol.serde import manifest_response
from fedge.v1 import hub_pb2

if TYPE_CHECKING:
    from fedge.protocol.endpoint import HubBackend

__all__ = ["ArtifactSource", "DownloadSlots", "device_id_of", "download", "manifest"]


class ArtifactSource(Protocol):
    """Content-addressed artifacts to read from (the cloud's store, a site's cache)."""

    def length(self, sha256: str) -> int:
        """The artifact's length in bytes."""

    def read(self, sha256: str, *, offset: int, chunk_size: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, chunk)`` from ``offset`` to the artifact's end."""


class DownloadSlots:
    """A non-blocking counting semaphore for downloads in flight (``None`` = no cap); a device
    refused a slot is told to retry in ``retry_after_ms``."""

    def __init__(self, limit: int | None, *, retry_after_ms: int = 500) -> None:
        if limit is not None and (isinstance(limit, bool) or limit < 1):
            raise ConfigError("max-concurrent-downloads", limit, "must be an integer >= 1")
        self.limit = limit
        self.retry_after_ms = retry_after_ms
        self.active = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> Callable[[], None] | None:
        """A release function if a slot was free, else ``None``. Releasing twice is harmless
        (a stream ends both by its generator closing and by the RPC's termination callback)."""
        with self._lock:
            if self.limit is not None and self.active >= self.limit:
                return None
            self.active += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self.active -= 1

        return release


def device_id_of(who: Any, claimed: str, speaks_for: Callable[[Any, str], bool]) -> str:
    """The device a hub request is for: the caller's own, or ``claimed`` if it speaks for it."""
    if who is None:  # a stand-alone hub on a test network: the request names the device
        if not claimed:
            raise PayloadError("device_id must not be empty")
        return claimed
    device_id = str(who.device_id)
    if claimed and claimed != device_id:
        if speaks_for(who, claimed):
            return claimed
        raise PermissionDeniedError(f"device {device_id!r} cannot act as {claimed!r}")
    return device_id


def manifest(
    backend: "HubBackend", device_id: str, request: hub_pb2.GetManifestRequest
) -> hub_pb2.GetManifestResponse:
    """``GetManifest``'s answer for ``device_id``."""
    signed = backend.manifest_for(
        device_id, profile=request.profile, installed_version=request.installed_version
    )
    return manifest_response(signed)


def download(
    backend: "HubBackend",
    slots: DownloadSlots,
    device_id: str,
    request: hub_pb2.DownloadArtifactRequest,
    context: grpc.ServicerContext,
) -> Iterator[hub_pb2.DownloadArtifactResponse]:
    """``DownloadArtifact``'s stream, in a download slot; a stream served to its end is told to
    the backend (a cancelled one ends at its ``yield``)."""
    release = slots.try_acquire()
    if release is None:
        wait = slots.retry_after_ms
        raise BusyError(
            f"the hub serves {slots.limit} downloads at once; retry in {wait} ms",
            retry_after_ms=wait,
        )
    context.add_callback(release)  # a cancelled stream frees its slot too
    try:
        source = backend.artifact(request.sha256)
        length = source.length(request.sha256)
        chunks = source.read(request.sha256, offset=request.offset, chunk_size=request.chunk_size)
        for offset, data in chunks:
            yield hub_pb2.DownloadArtifactResponse(offset=offset, data=data, length=length)
    finally:
        release()
    backend.downloaded(
        device_id, request.sha256, offset=request.offset, sent=length - request.offset
    )
