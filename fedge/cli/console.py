"""``fedge console``: a one-time login URL for the coordinator's web console.

The control service (mutual TLS, the operator certificate) mints the token, so only an operator
can open a console session; the URL works once, within minutes, and sets a session cookie.
"""

from urllib.parse import urlsplit, urlunsplit

from fedge.cli._control import Control, operator_command
from fedge.cli.common import print_plain
from fedge.protocol.transport import parse_address
from fedge.v1 import control_pb2 as pb

__all__ = ["console_command", "reachable_url"]

_WILDCARD = ("0.0.0.0", "::", "")


def reachable_url(url: str, coordinator: str) -> str:
    """``url`` with a wildcard bind host (0.0.0.0, ::) replaced by the coordinator's host."""
    parts = urlsplit(url)
    if parts.hostname not in _WILDCARD:
        return url
    host = parse_address(coordinator, option="--coordinator")[0]
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


@operator_command
def console_command(
    control: Control = Control(),
) -> None:
    """Print a one-time URL that opens the coordinator's web console (a session cookie)."""
    response = control.call(
        lambda stub: stub.CreateConsoleLogin(pb.CreateConsoleLoginRequest(), timeout=30)
    )
    url = reachable_url(response.url, control.address)
    print_plain(url)
