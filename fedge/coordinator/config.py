"""The coordinator's configuration file (``coordinator.toml``), typed and validated.

Every key is checked when the file is read: an unknown key, a value of the wrong type or out
of range is a :class:`~fedge.errors.ConfigError` naming the file, the key (as the file writes
it, with hyphens) and the value. Besides ``[coordinator]``, the file may hold ``[console]``
(``address``, ``public-url``: the web console) and ``[metrics]`` (``address``: Prometheus
``/metrics``); each is off when its table is absent.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError
from fedge.options import check_field_types, config_key, load_config_table
from fedge.protocol.transport import is_loopback, parse_address

__all__ = ["CoordinatorConfig", "load_coordinator_config"]


@dataclass(frozen=True)
class CoordinatorConfig:
    """Where the coordinator listens, keeps its state and how patient it is with devices.

    ``address`` serves the fleet, model hub and control services over mutual TLS;
    ``enroll_address`` serves enrolment only, over TLS with the certificate pinned by
    enrolment tokens.
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
    # The web console (HOST:PORT, "" = off): loopback serves without a login; any other
    # address needs TLS (the server certificate) and an operator login (`fedge console`).
    console_address: str = ""
    # The URL operators reach the console at, when it is not https://HOST:PORT of the bind.
    console_public_url: str = ""
    # Prometheus /metrics over plain HTTP (HOST:PORT, "" = off).
    metrics_address: str = ""
    # Seconds between the health gate's looks at each staged rollout.
    rollout_check_seconds: float = 1.0

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in (
            "heartbeat_seconds",
            "liveness_seconds",
            "wait_for_devices_seconds",
            "rollout_check_seconds",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(config_key(name), getattr(self, name), "must be positive")
        if self.liveness_seconds < 2 * self.heartbeat_seconds:
            raise ConfigError(
                "liveness-seconds", self.liveness_seconds, "must be >= 2 x heartbeat-seconds"
            )
        for name in ("max_attempts", "device_cert_days", "max_workers", "max_concurrent_downloads"):
            if getattr(self, name) < 1:
                raise ConfigError(config_key(name), getattr(self, name), "must be an integer >= 1")
        if not 64 * 1024 <= self.chunk_bytes <= self.max_message_bytes - 64 * 1024:
            raise ConfigError(
                "chunk-bytes", self.chunk_bytes, "must be in [64 KiB, max-message-bytes - 64 KiB]"
            )
        for name in ("address", "enroll_address"):
            parse_address(getattr(self, name), option=config_key(name))
        if self.console_address:
            parse_address(self.console_address, option="console.address")
            if self.insecure and not is_loopback(self.console_address):
                raise ConfigError(
                    "console.address",
                    self.console_address,
                    "is not loopback: the console needs TLS there, and --insecure has none",
                )
        if self.metrics_address:
            parse_address(self.metrics_address, option="metrics.address")
        url = self.console_public_url
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError("console.public-url", url, "must start with http:// or https://")
        if self.address == self.enroll_address and not self.address.endswith(":0"):
            raise ConfigError("enroll-address", self.enroll_address, "must differ from address")


#: The optional tables beside [coordinator], each key and the coordinator option it sets.
_SECTIONS = {
    "console": {"address": "console-address", "public-url": "console-public-url"},
    "metrics": {"address": "metrics-address"},
}


def load_coordinator_config(path: Path | str, **overrides: Any) -> CoordinatorConfig:
    """Read ``path`` (a ``[coordinator]`` table or top-level keys, and the optional ``[console]``
    and ``[metrics]`` tables); paths are relative to the file."""
    return load_config_table(
        path,
        "coordinator",
        CoordinatorConfig,
        dir_keys=("state_dir", "certs_dir"),
        overrides=overrides,
        sections=_SECTIONS,
    )
