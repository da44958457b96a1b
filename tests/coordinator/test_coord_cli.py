"""The deployment commands' bad-input paths: one line, exit 2, nothing created or lost."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge.cli.main import app

from .conftest import Fleet

runner = CliRunner()


def test_certs_init_refuses_to_replace_a_pki(tmp_path: Path) -> None:
    first = runner.invoke(app, ["certs", "init", "--dir", str(tmp_path / "c")])
    assert first.exit_code == 0, first.output
    ca = (tmp_path / "c" / "ca.pem").read_bytes()
    again = runner.invoke(app, ["certs", "init", "--dir", str(tmp_path / "c")])
    assert again.exit_code == 2
    assert "--force" in again.output and "Traceback" not in again.output
    assert (tmp_path / "c" / "ca.pem").read_bytes() == ca


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["coordinator", "start", "--config", "missing.toml"], "is not a file"),
        (["run", "start", "--set", "rounds"], "--set: 'rounds' must be KEY=VALUE"),
        (["run", "start", "--config", "missing.toml"], "--config: 'missing.toml' is not a file"),
        (["edge", "start", "--state", "nope", "--data", "nope"], "holds no identity"),
        (
            ["edge", "enroll", "--coordinator", "h:1", "--token", "x", "--state", "s"],
            "is not a fedge enrolment token",
        ),
        (
            ["edge", "make-data", "--out", "d", "--format", "gif"],
            "format: 'gif' is not one of: npz, csv, images",
        ),
        (["fleet", "ls", "--operator", "nowhere"], "lacks"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_coordinator_config_errors_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text("[coordinator]\nheartbeat-seconds = 10.0\nliveness-seconds = 5.0\n")
    result = runner.invoke(app, ["coordinator", "start", "--config", str(config)])
    assert result.exit_code == 2
    assert "liveness-seconds: 5.0 must be >= 2 x heartbeat-seconds" in result.output
    config.write_text("[coordinator]\nport = 1\n")
    result = runner.invoke(app, ["coordinator", "start", "--config", str(config)])
    assert result.exit_code == 2 and "port: 1 is not a coordinator option" in result.output


def test_operator_commands_against_a_live_coordinator(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDGE_COORDINATOR", fleet.address)
    options = ["--coordinator", fleet.address, "--operator", str(fleet.root / "certs/operator")]
    token = runner.invoke(app, ["fleet", "token", "create", *options])
    assert token.exit_code == 0 and token.output.startswith("fedge1."), token.output
    identity = fleet.enroll("cam")
    listed = runner.invoke(app, ["fleet", "ls", *options])
    assert listed.exit_code == 0 and identity.device_id in listed.output
    revoked = runner.invoke(app, ["fleet", "revoke", identity.device_id, *options])
    assert revoked.exit_code == 0
    missing = runner.invoke(app, ["fleet", "revoke", "dev-nope", *options])
    assert missing.exit_code == 2 and "no device 'dev-nope'" in missing.output
    status = runner.invoke(app, ["run", "status", *options])
    assert status.exit_code == 2 and "Error: no runs yet" in status.output
    bad = runner.invoke(app, ["run", "start", "--dataset", "nope", *options])
    assert bad.exit_code == 2 and "--dataset: 'nope' is not one of" in bad.output
