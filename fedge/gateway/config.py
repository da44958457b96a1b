"""The gateway's configuration file (``gateway.toml``), typed and validated.

Every key is checked when the file is read: an unknown key, a value of the wrong type or out of
range is a :class:`~fedge.errors.ConfigError` naming the file, the key and the value.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedge.errors import ConfigError
from fedge.options import load_config_table, option
from fedge.protocol.server_config import EndpointConfig
from fedge.protocol.transport import parse_address

__all__ = ["GatewayConfig", "load_gateway_config"]

_WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class GatewayConfig(EndpointConfig):
    """Where the gateway serves its site, where it keeps its state, and how it paces itself.

    ``address`` serves the site's devices the fleet and model hub services over mutual TLS
    (the gateway's certificate, issued by the cloud for ``hosts``); ``enroll_address`` serves
    enrolment only (a self-signed certificate that the site's tokens pin). ``coordinator`` is
    the cloud's address (default: the one the gateway enrolled with).
    """

    address: str = option(
        "127.0.0.1:8443", help="HOST:PORT serving the site's devices (mutual TLS)."
    )
    enroll_address: str = option(
        "", help="HOST:PORT serving the site's enrolment (default: the port after address's)."
    )
    hosts: tuple[str, ...] = option(
        (), help="Names and IP addresses the site's devices reach address by (default: its host)."
    )
    state_dir: Path = option(Path("gateway-state"), help="The gateway's identity, roster, cache.")
    coordinator: str = option(
        "", help="The cloud's HOST:PORT (default: the one the gateway enrolled with)."
    )
    coordinator_enroll_address: str = option(
        "", help="The cloud's enrolment port, for the first enrolment (default: PORT+1)."
    )
    sync_seconds: float = option(
        5.0, help="Seconds between the site's reports to the cloud.", positive=True
    )
    # So that a device that asks while the cloud is unreachable gets the latest release the
    # cloud offered it.
    release_interval: float = option(
        30.0, help="Seconds between refreshes of each device's targeted release.", positive=True
    )
    round_margin_seconds: float = option(
        5.0, help="Seconds before a cloud round's timeout the gateway answers it.", low=0.0
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        host, _ = parse_address(self.address, option="address")
        if self.coordinator:
            parse_address(self.coordinator, option="coordinator")
        if self.coordinator_enroll_address:
            parse_address(self.coordinator_enroll_address, option="coordinator-enroll-address")
        if not self.hosts and host in _WILDCARDS:
            raise ConfigError(
                "hosts", [], f"must name the gateway's addresses when address is {self.address}"
            )

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
