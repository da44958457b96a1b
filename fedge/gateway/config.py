"""The gateway's configuration file (``gateway.toml``), typed and validated.

Every key is checked when the file is read: an unknown key, a value of the wrong type or out of
range is a :class:`~fedge.errors.ConfigError` naming the file, the key and the value.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError
from fedge.options import check_field_types, config_key, load_config_table
from fedge.protocol.transport import parse_address

__all__ = ["GatewayConfig", "load_gateway_config"]

_WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway serves its site, where it keeps its state, and how it paces itself.

    ``address`` serves the site's devices the fleet and model hub services over mutual TLS
    (the gateway's certificate, issued by the cloud for ``hosts``); ``enroll_address`` serves
    enrolment only (a self-signed certificate that the site's tokens pin). ``coordinator`` is
    the cloud's address (default: the one the gateway enrolled with).
    """

    address: str = "127.0.0.1:8443"
    enroll_address: str = ""
    # Names and IP addresses the site's devices reach ``address`` by (default: its host).
    hosts: tuple[str, ...] = ()
    state_dir: Path = Path("gateway-state")
    coordinator: str = ""
    # The cloud's enrolment port, for the gateway's own first enrolment (default: PORT+1).
    coordinator_enroll_address: str = ""
    heartbeat_seconds: float = 5.0
    liveness_seconds: float = 15.0
    # How often the gateway reports its site to the cloud (the cloud may ask for more often).
    sync_seconds: float = 5.0
    # How often the gateway refreshes the release the cloud targets at each of its devices, so
    # a device that asks while the cloud is unreachable gets the latest one the cloud offered.
    release_interval: float = 30.0
    # The gateway answers a cloud round this much before the round's timeout.
    round_margin_seconds: float = 5.0
    max_message_bytes: int = 8 * 2**20
    chunk_bytes: int = 1 * 2**20
    max_payload_bytes: int = 2**30
    max_workers: int = 64
    max_concurrent_downloads: int = 32

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in (
            "heartbeat_seconds",
            "liveness_seconds",
            "sync_seconds",
            "release_interval",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(config_key(name), getattr(self, name), "must be positive")
        if self.round_margin_seconds < 0:
            raise ConfigError("round-margin-seconds", self.round_margin_seconds, "must be >= 0")
        if self.liveness_seconds < 2 * self.heartbeat_seconds:
            raise ConfigError(
                "liveness-seconds", self.liveness_seconds, "must be >= 2 x heartbeat-seconds"
            )
        for name in ("max_workers", "max_concurrent_downloads"):
            if getattr(self, name) < 1:
                raise ConfigError(config_key(name), getattr(self, name), "must be an integer >= 1")
        if not 64 * 1024 <= self.chunk_bytes <= self.max_message_bytes - 64 * 1024:
            raise ConfigError(
                "chunk-bytes", self.chunk_bytes, "must be in [64 KiB, max-message-bytes - 64 KiB]"
            )
        host, port = parse_address(self.address, option="address")
        if self.enroll_address:
            parse_address(self.enroll_address, option="enroll-address")
            if self.enroll_address == self.address and port != 0:
                raise ConfigError("enroll-address", self.enroll_address, "must differ from address")
        if self.coordinator:
            parse_address(self.coordinator, option="coordinator")
        if self.coordinator_enroll_address:
            parse_address(self.coordinator_enroll_address, option="coordinator-enroll-address")
        if not self.hosts and host in _WILDCARDS:
            raise ConfigError(
                "hosts", [], f"must name the gateway's addresses when address is {self.address}"
            )

    @property
    def enroll(self) -> str:
        """The enrolment address (default: the port after ``address``'s)."""
        if self.enroll_address:
            return self.enroll_address
        host, port = parse_address(self.address, option="address")
        return f"{host}:{port + 1 if port else 0}"

    @property
    def server_names(self) -> tuple[str, ...]:
        """The names the gateway's certificate serves (``hosts``, or ``address``'s host)."""
        host, _ = parse_address(self.address, option="address")
        return self.hosts or (host,)


def load_gateway_config(path: Path | str, **overrides: Any) -> GatewayConfig:
    """Read ``path`` (a ``[gateway]`` table or top-level keys); ``state-dir`` is file-relative."""
    return load_config_table(
        path, "gateway", GatewayConfig, dir_keys=("state_dir",), overrides=overrides
    )
