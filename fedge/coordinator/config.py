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
from fedge.options import load_config_table, option
from fedge.protocol.server_config import EndpointConfig
from fedge.protocol.transport import is_loopback, parse_address

__all__ = ["CoordinatorConfig", "load_coordinator_config"]


@dataclass(frozen=True)
class CoordinatorConfig(EndpointConfig):
    """Where the coordinator listens, keeps its state and how patient it is with devices.

    ``address`` serves the fleet, model hub and control services over mutual TLS;
    ``enroll_address`` serves enrolment only, over TLS with the certificate pinned by
    enrolment tokens.
    """

    enroll_address: str = option(
        "127.0.0.1:7444", help="HOST:PORT serving enrolment only (TLS, pinned by tokens)."
    )
    state_dir: Path = option(
        Path("coordinator-state"), help="SQLite database, run checkpoints, releases, release key."
    )
    certs_dir: Path = option(Path("certs"), help="The CA and server certificates.")
    insecure: bool = option(False, help="No TLS: a trusted test network only.")
    wait_for_devices_seconds: float = option(
        120.0, help="Seconds a round waits for the run's pinned devices.", positive=True
    )
    max_attempts: int = option(3, help="Tries of a round before the run fails.", low=1)
    device_cert_days: int = option(365, help="Days a device certificate is valid.", low=1)
    # The web console (HOST:PORT, "" = off): loopback serves without a login; any other
    # address needs TLS (the server certificate) and an operator login (`fedge console`).
    console_address: str = option("", help="[console] address: HOST:PORT, '' = off.")
    # The URL operators reach the console at, when it is not https://HOST:PORT of the bind.
    console_public_url: str = option("", help="[console] public-url: how operators reach it.")
    # Prometheus /metrics over plain HTTP (HOST:PORT, "" = off).
    metrics_address: str = option("", help="[metrics] address: HOST:PORT, '' = off.")
    rollout_check_seconds: float = option(
        1.0, help="Seconds between the health gate's looks at each staged rollout.", positive=True
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_address(self.enroll_address, option="enroll-address")
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
