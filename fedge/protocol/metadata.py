"""gRPC metadata keys both sides agree on, and the retry hint a busy server sends."""

from typing import Any

__all__ = ["DEVICE_ID_METADATA", "RETRY_PUSHBACK_KEY", "retry_hint"]

#: On an ``--insecure`` test network there is no certificate: a device names itself here.
DEVICE_ID_METADATA = "fedge-device-id"

#: gRPC's own name for a server's retry hint (gRPC A6 retry design): milliseconds to wait.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"


def retry_hint(exc: Any, default: float) -> float:
    """Seconds a ``RESOURCE_EXHAUSTED`` answer asked the caller to wait, else ``default``."""
    trailing = getattr(exc, "trailing_metadata", lambda: None)() or ()
    for key, value in trailing:
        if key == RETRY_PUSHBACK_KEY:
            try:
                return max(int(value), 0) / 1000.0
            except (TypeError, ValueError):
                break
    return default
