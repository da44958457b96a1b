"""Staged rollout: which release a device should run.

Devices are bucketed by a stable hash of their identity into 100 buckets; a release published to
P% targets the devices whose bucket is below P. Growing P (promote) keeps every device that was
already targeted, so a canary device stays a canary. A rolled-back release is never offered again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BUCKETS", "ReleaseTarget", "bucket_of", "select_release", "validate_percent"]

BUCKETS = 100


def bucket_of(device_id: str) -> int:
    """Stable bucket in ``[0, 100)`` from the SHA-256 of the device identity."""
    digest = hashlib.sha256(device_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def validate_percent(percent: int) -> int:
    """Return ``percent`` if in ``[0, 100]``; raise ``ConfigError`` naming it otherwise."""
    from fedge.errors import ConfigError

    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ConfigError("percent", percent, "must be an integer between 0 and 100")
    return percent


@dataclass(frozen=True)
class ReleaseTarget:
    """The rollout facts of one release needed to pick a device's target."""

    version: int
    profile: str
    percent: int
    withdrawn: bool


def select_release(
    releases: Iterable[ReleaseTarget], *, device_id: str, profile: str
) -> int | None:
    """The newest non-withdrawn release for ``profile`` whose percentage covers the device."""
    bucket = bucket_of(device_id)
    eligible = [
        r.version
        for r in releases
        if r.profile == profile and not r.withdrawn and bucket < r.percent
    ]
    return max(eligible, default=None)
