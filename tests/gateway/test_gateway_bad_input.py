"""``fedge gateway start`` with bad input: one line naming the file, key or value, exit 2, and
nothing made (no state directory, no token spent)."""

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.v1 import control_pb2 as pb

from ..conftest import Fleet


def _start(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["gateway", "start", *args])
    return result.exit_code, result.output


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text("[gateway]\n" + body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('adress = "127.0.0.1:8443"\n', "adress: '127.0.0.1:8443' is not a gateway option"),
        ("sync-seconds = -1\n", "sync-seconds: -1 must be positive"),
        ('hosts = "gw.local"\n', "hosts: 'gw.local' must be a list of strings"),
        ('address = "0.0.0.0:8443"\n', "hosts: [] must name the gateway's addresses"),
        ('address = "nowhere"\n', "address: 'nowhere' must be HOST:PORT"),
    ],
)
def test_a_bad_gateway_toml_is_one_line(tmp_path: Path, body: str, message: str) -> None:
    config = _toml(tmp_path, body + 'state-dir = "gw"\n')
    code, out = _start("--config", str(config))
    assert code == 2 and message in out and str(config) in out, out
    assert "Traceback" not in out and not (tmp_path / "gw").exists()


def test_an_unenrolled_gateway_needs_a_token(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'state-dir = "gw"\naddress = "127.0.0.1:0"\n')
    code, out = _start("--config", str(config))
    assert code == 2 and "holds no gateway identity" in out and "--token" in out, out
    assert not (tmp_path / "gw").exists()


def test_a_port_in_use_costs_no_token(fleet: Fleet, tmp_path: Path) -> None:
    token = fleet.control_stub().CreateEnrollToken(
        pb.CreateEnrollTokenRequest(site="clinic", gateway=True)
    )
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        config = _toml(tmp_path, f'state-dir = "gw"\naddress = "127.0.0.1:{port}"\n')
        code, out = _start(
            "--config",
            str(config),
            "--coordinator",
            fleet.address,
            "--enroll-address",
            fleet.enroll_address,
            "--token",
            token.token,
        )
    assert code == 2 and "address: cannot listen on" in out, out
    assert not (tmp_path / "gw").exists()
    secret = token.token.split(".")[1]
    assert fleet.coordinator.state.token_kind(secret) == ("gateway", "clinic")  # still unused
