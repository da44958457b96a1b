"""Staged rollout: which release a device should run.

Devices are put in a stable *rollout order* by a hash of their identity. A release published to
P% targets the first ``floor(P * N / 100)`` devices of that order (at least one when P > 0), N
being the fleet: so 34% of three devices is exactly one canary, and growing P (promote) keeps
every device already targeted. Targeting is also sticky: a device once offered a release keeps
it as a target even if a newly enrolled device takes its place in the order. A rolled-back
(withdrawn) release is never offered again. A :class:`RolloutPolicy` describes a health-gated
rollout (stages, failure threshold, patience); :mod:`fedge.release.gate` carries it out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from fedge.errors import ConfigError

__all__ = [
    "BUCKETS",
    "ReleaseTarget",
    "RolloutPolicy",
    "bucket_of",
    "covered_count",
    "parse_stages",
    "rollout_order",
    "select_release",
    "validate_percent",
]

BUCKETS = 100


def _hash(device_id: str) -> int:
    return int.from_bytes(hashlib.sha256(device_id.encode("utf-8")).digest()[:8], "big")


def bucket_of(device_id: str) -> int:
    """Stable bucket in ``[0, 100)`` from the SHA-256 of the device identity."""
    return _hash(device_id) % BUCKETS


def rollout_order(device_ids: Iterable[str]) -> list[str]:
    """Devices in their stable rollout order (hash of the identity, then the identity)."""
    return sorted(set(device_ids), key=lambda d: (_hash(d), d))


def covered_count(percent: int, fleet_size: int) -> int:
    """How many devices of the rollout order ``percent`` targets."""
    if percent <= 0 or fleet_size <= 0:
        return 0
    return max(1, percent * fleet_size // 100)


def validate_percent(percent: int) -> int:
    """Return ``percent`` if in ``[0, 100]``; raise ``ConfigError`` naming it otherwise."""
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
    releases: Iterable[ReleaseTarget],
    *,
    device_id: str,
    profile: str,
    fleet: Collection[str] = (),
    offered: Collection[int] = (),
) -> int | None:
    """The newest live release for ``profile`` that covers the device (or was offered to it)."""
    order = rollout_order([*fleet, device_id])
    rank = order.index(device_id)
    eligible = [
        r.version
        for r in releases
        if r.profile == profile
        and not r.withdrawn
        and (rank < covered_count(r.percent, len(order)) or r.version in offered)
    ]
    return max(eligible, default=None)


def parse_stages(text: str) -> tuple[int, ...]:
    """``"10,50,100"`` → ``(10, 50, 100)``; :class:`ConfigError` naming ``--stages`` otherwise."""
    try:
        stages = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError("--stages", text, "must be percentages like 10,50,100") from None
    return RolloutPolicy(stages=stages).stages


@dataclass(frozen=True)
class RolloutPolicy:
    """Stages (percent, increasing, ending at 100), the failure threshold and the patience."""

    stages: tuple[int, ...]
    max_failure_rate: float = 0.2
    min_devices: int = 1
    stage_wait: float = 300.0

    def __post_init__(self) -> None:
        stages = self.stages
        text = ",".join(map(str, stages))
        if not stages or any(isinstance(p, bool) or not isinstance(p, int) for p in stages):
            raise ConfigError("--stages", text, "must be percentages like 10,50,100")
        if any(not 0 < p <= 100 for p in stages) or list(stages) != sorted(set(stages)):
            raise ConfigError("--stages", text, "must increase, each in 1-100")
        if stages[-1] != 100:
            raise ConfigError("--stages", text, "must end at 100")
        if not 0 <= self.max_failure_rate < 1:
            raise ConfigError("--max-failure-rate", self.max_failure_rate, "must be in [0, 1)")
        if isinstance(self.min_devices, bool) or self.min_devices < 1:
            raise ConfigError("--min-devices", self.min_devices, "must be an integer >= 1")
        if not self.stage_wait >= 0:
            raise ConfigError("--stage-wait", self.stage_wait, "must be >= 0 seconds")
