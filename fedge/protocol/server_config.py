"""What the cloud coordinator and a site gateway configure alike: their fleet endpoint.

Both serve devices the fleet and model hub services on ``address`` (mutual TLS) and enrolment
on ``enroll_address``; both pace devices' heartbeats and bound messages, chunks, payloads,
workers and concurrent artifact downloads the same way. Each option is declared once here
(:func:`~fedge.options.option`); ``coordinator.toml`` and ``gateway.toml`` add their own.
"""

from dataclasses import dataclass

from fedge.errors import ConfigError
from fedge.options import check_field_types, check_options, option
from fedge.protocol.transport import TransportOptions, parse_address

__all__ = ["EndpointConfig"]

_KIB = 1024


@dataclass(frozen=True)
class EndpointConfig:
    """A fleet endpoint's options (see the module docstring)."""

    address: str = option(
        "127.0.0.1:7443", help="HOST:PORT serving the fleet and model hub (mutual TLS)."
    )
    enroll_address: str = option("", help="HOST:PORT serving enrolment only.")
    heartbeat_seconds: float = option(
        5.0, help="Seconds between a device's heartbeats.", positive=True
    )
    liveness_seconds: float = option(
        15.0, help="Seconds without a heartbeat before a device is offline.", positive=True
    )
    max_message_bytes: int = option(8 * 2**20, help="Largest gRPC message.", low=128 * _KIB)
    chunk_bytes: int = option(2**20, help="Chunk size of streamed arrays.", low=64 * _KIB)
    max_payload_bytes: int = option(2**30, help="Largest streamed payload.", low=1)
    max_workers: int = option(64, help="gRPC worker threads.", low=1)
    # Artifact downloads served at once; beyond, devices are told to retry later (their
    # updater backs off with jitter), so a fleet-wide rollout cannot exhaust the workers.
    max_concurrent_downloads: int = option(32, help="Artifact downloads served at once.", low=1)

    def __post_init__(self) -> None:
        check_field_types(self)
        check_options(self)
        if self.liveness_seconds < 2 * self.heartbeat_seconds:
            raise ConfigError(
                "liveness-seconds", self.liveness_seconds, "must be >= 2 x heartbeat-seconds"
            )
        if self.chunk_bytes > self.max_message_bytes - 64 * _KIB:
            raise ConfigError(
                "chunk-bytes", self.chunk_bytes, "must be in [64 KiB, max-message-bytes - 64 KiB]"
            )
        _, port = parse_address(self.address, option="address")
        if self.enroll_address:
            parse_address(self.enroll_address, option="enroll-address")
            if self.enroll_address == self.address and port != 0:
                raise ConfigError("enroll-address", self.enroll_address, "must differ from address")

    @property
    def enroll(self) -> str:
        """The enrolment address (default: the port after ``address``'s)."""
        if self.enroll_address:
            return self.enroll_address
        host, port = parse_address(self.address, option="address")
        return f"{host}:{port + 1 if port else 0}"

    def transport_options(self) -> TransportOptions:
        """The gRPC limits of this endpoint's servers (and of a gateway's uplink)."""
        return TransportOptions(
            max_message_bytes=self.max_message_bytes, chunk_bytes=self.chunk_bytes
        )
