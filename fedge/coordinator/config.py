"""The coordinator's configuration file (``coordinator.toml``), typed and validated."""

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError

__all__ = ["CoordinatorConfig", "load_coordinator_config"]


@dataclass(frozen=True)
class CoordinatorConfig:
    """Where the coordinator listens, keeps its state and how patient it is with devices.

    ``address`` serves the fleet and control services over mutual TLS; ``enroll_address``
    serves enrolment only, over TLS with the certificate pinned by enrolment tokens.
    """

    address: str = "127.0.0.1:7443"
    enroll_address: str = "127.0.0.1:7444"
    state_dir: Path = Path("coordinator-state")
    certs_dir: Path = Path("certs")
    insecure: bool = False
    heartbeat_seconds: float = 5.0
    liveness_seconds: float = 15.0
    wait_for_devices_seconds: float = 120.0
    max_attempts: int = 3
    max_message_bytes: int = 8 * 2**20
    chunk_bytes: int = 1 * 2**20
    max_payload_bytes: int = 2**30
    device_cert_days: int = 365
    max_workers: int = 64
    # Artifact downloads served at once; beyond, devices are told to retry later (their
    # updater backs off with jitter), so a fleet-wide rollout cannot exhaust the workers.
    max_concurrent_downloads: int = 32

    def __post_init__(self) -> None:
        for name in ("heartbeat_seconds", "liveness_seconds", "wait_for_devices_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigError(_key(name), getattr(self, name), "must be positive")
        if self.liveness_seconds < 2 * self.heartbeat_seconds:
            raise ConfigError(
                "liveness-seconds", self.liveness_seconds, "must be >= 2 x heartbeat-seconds"
            )
        for name in ("max_attempts", "device_cert_days", "max_workers", "max_concurrent_downloads"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(_key(name), getattr(self, name), "must be an integer >= 1")
        if not 64 * 1024 <= self.chunk_bytes <= self.max_message_bytes - 64 * 1024:
            raise ConfigError(
                "chunk-bytes", self.chunk_bytes, "must be in [64 KiB, max-message-bytes - 64 KiB]"
            )
        for name in ("address", "enroll_address"):
            value = getattr(self, name)
            if not isinstance(value, str) or ":" not in value:
                raise ConfigError(_key(name), value, "must be HOST:PORT")


def _key(name: str) -> str:
    return name.replace("_", "-")


def load_coordinator_config(path: Path | str, **overrides: Any) -> CoordinatorConfig:
    """Read ``path`` (a ``[coordinator]`` table or top-level keys); paths are file-relative."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", str(path), "is not a file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError("--config", str(path), f"is not valid TOML: {err}") from err
    table = data.get("coordinator", data)
    known = {f.name: f for f in fields(CoordinatorConfig)}
    kwargs: dict[str, Any] = {}
    for key, value in {**table, **overrides}.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(key, value, f"is not a coordinator option; valid: {sorted(known)}")
        if name in ("state_dir", "certs_dir"):
            value = (path.parent / str(value)).resolve()
        kwargs[name] = value
    try:
        return CoordinatorConfig(**kwargs)
    except TypeError as err:
        raise ConfigError("--config", str(path), str(err)) from err
