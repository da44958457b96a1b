"""What the operator sees and names against a live coordinator: devices by id, prefix or name,
their installed release and slot, re-enrolment only on purpose, spent tokens leave nothing."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.edge.identity import EnrollError, enroll_device
from fedge.v1 import fleet_pb2

from .conftest import Fleet

runner = CliRunner()


def _cli(fleet: Fleet, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, *fleet.operator_args])
    return result.exit_code, result.output


def test_devices_are_named_by_id_unique_prefix_or_name(fleet: Fleet) -> None:
    cam = fleet.enroll("camera-7")
    other = fleet.enroll("camera-8")
    code, out = _cli(fleet, "fleet", "revoke", "camera-7")
    assert code == 0 and f"revoked {cam.device_id} (camera-7)" in out, out
    code, out = _cli(fleet, "fleet", "revoke", other.device_id[:7])  # "dev-" + 3 hex digits
    if other.device_id[:7] == cam.device_id[:7]:  # one in 4096: the prefix names both
        assert code == 2 and "names 2 devices" in out
    else:
        assert code == 0 and other.device_id in out
    code, out = _cli(fleet, "fleet", "revoke", "dev-")
    assert code == 2 and "names 2 devices" in out and "be more exact" in out


def test_fleet_ls_shows_each_devices_release_slot_and_role(fleet: Fleet) -> None:
    trainer = fleet.trainer("trainer")
    viewer = fleet.enroll("viewer")
    fleet.fleet_stub(viewer).Heartbeat(
        fleet_pb2.HeartbeatRequest(profile="camera", release_version=3, release_slot="b"),
        timeout=10,
    )
    code, out = _cli(fleet, "fleet", "ls", "--json")
    assert code == 0, out
    rows = {d["name"]: d for d in json.loads(out)}
    assert rows["viewer"]["release_version"] == 3 and rows["viewer"]["release_slot"] == "b"
    assert rows["viewer"]["profile"] == "camera" and not rows["viewer"]["can_train"]
    assert rows["trainer"]["can_train"] and "1x8x8, 10 classes" in rows["trainer"]["data"]
    code, out = _cli(fleet, "fleet", "ls")
    lines = out.splitlines()
    assert any(
        viewer.device_id in x and "release 3 (slot b)" in x and "inference only" in x for x in lines
    )
    assert any(trainer.device_id in x and "trains" in x for x in lines)


def test_re_enrolling_needs_force_and_a_used_token_leaves_nothing(
    fleet: Fleet, tmp_path: Path
) -> None:
    identity = fleet.enroll("cam")
    state = Path(identity.state_dir)
    key = (state / "device.key").read_bytes()
    token = fleet.token()
    with pytest.raises(Exception, match="already enrolled"):
        enroll_device(
            coordinator=fleet.address,
            token=token,
            state_dir=state,
            enroll_address=fleet.enroll_address,
        )
    assert (state / "device.key").read_bytes() == key  # the device's identity is intact
    again = enroll_device(
        coordinator=fleet.address,
        token=token,
        state_dir=state,
        enroll_address=fleet.enroll_address,
        force=True,
    )
    assert again.device_id != identity.device_id and (state / "device.key").read_bytes() != key
    fresh = tmp_path / "fresh"
    with pytest.raises(EnrollError, match="already used"):
        enroll_device(
            coordinator=fleet.address,
            token=token,
            state_dir=fresh,
            enroll_address=fleet.enroll_address,
        )
    assert not fresh.exists()  # a refused enrolment makes no state directory


def test_privacy_report_and_run_results_name_a_missing_run(fleet: Fleet) -> None:
    code, out = _cli(fleet, "privacy", "report", "7")
    assert code == 2 and "no run 7" in out and "Traceback" not in out


def test_a_device_whose_inference_port_is_taken_exits_2(fleet: Fleet) -> None:
    import socket

    identity = fleet.enroll("cam")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app,
            ["edge", "start", "--state", identity.state_dir, "--inference", f"127.0.0.1:{port}"],
        )
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}: address in use" in result.output


def test_an_unknown_device_profile_is_one_line_exit_2(fleet: Fleet) -> None:
    identity = fleet.enroll("cam")
    result = runner.invoke(
        app, ["edge", "start", "--state", identity.state_dir, "--profile", "nope"]
    )
    assert result.exit_code == 2, result.output
    assert "--profile: 'nope'" in result.output and "camera" in result.output
    assert "Traceback" not in result.output


def test_a_second_agent_on_a_running_devices_state_exits_2(fleet: Fleet) -> None:
    """Two agents of one identity would take the same tasks: the second is refused, naming
    the process that holds the state; after the first stops, the state starts again."""
    import subprocess
    import sys

    identity = fleet.enroll("cam")
    start = [
        sys.executable, "-m", "fedge.cli", "edge", "start", "--state", identity.state_dir,
        "--inference", "", "--heartbeat", "0.5",
    ]  # fmt: skip
    first = subprocess.Popen(start, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert first.stdout is not None
        line = first.stdout.readline()  # printed once it holds the state and runs
        assert "connecting to" in line, line
        second = subprocess.run(start, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"is in use by another fedge edge process (pid {first.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.terminate()
        first.wait(timeout=60)
    again = subprocess.Popen(start, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert again.stdout is not None
        assert "connecting to" in again.stdout.readline()
    finally:
        again.terminate()
        again.wait(timeout=60)
