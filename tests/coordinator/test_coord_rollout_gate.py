"""Health-gated rollouts on a real coordinator with ten in-process devices (real updaters,
real ONNX Runtime health checks, mutual TLS): the coordinator widens a release stage by stage on
its own, halts it when devices fail their health check and rolls the fleet back, and keeps the
rollout across a restart."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.server import Coordinator
from fedge.edge.delivery import DeliverySettings, DeviceDelivery
from fedge.edge.health import HealthConfig
from fedge.edge.identity import DeviceIdentity
from fedge.release.rollout import rollout_order
from fedge.release.testing import make_labelled_data, make_linear_model, publish_linear
from fedge.v1 import control_pb2 as pb

from .conftest import Fleet, start_fleet

runner = CliRunner()
GOOD, CANDIDATE = 1, 2  # seeds of the two linear models


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Fleet]:
    """A coordinator whose health gate looks at rollouts five times a second."""
    with closing(start_fleet(tmp_path, rollout_check_seconds=0.2)) as f:
        yield f


def wait_for(what: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.1)
    pytest.fail("timed out")


class Devices:
    """Enrolled devices with their delivery loops; some hold an accuracy floor."""

    def __init__(self, fleet: Fleet, count: int) -> None:
        self.fleet = fleet
        self.identities = [fleet.enroll(f"cam{i:02d}") for i in range(count)]
        self.order = rollout_order([i.device_id for i in self.identities])
        self.deliveries: list[DeviceDelivery] = []

    def by_rank(self, rank: int) -> DeviceIdentity:
        return next(i for i in self.identities if i.device_id == self.order[rank])

    def start(self, floors: dict[str, float]) -> None:
        """Start every device's delivery loop; ``floors``: device id → accuracy floor on data
        the GOOD model labelled (the CANDIDATE scores far below it)."""
        for identity in self.identities:
            floor = floors.get(identity.device_id)
            health = HealthConfig()
            if floor is not None:
                labelled = make_labelled_data(
                    Path(identity.state_dir) / "labelled.npz", seed=GOOD, samples=200
                )
                health = HealthConfig(accuracy_floor=floor, labelled=labelled)
            settings = DeliverySettings(interval=0.2, inference_address=None, health=health)
            delivery = DeviceDelivery(
                channel=self.fleet.channel(identity.tls()),
                state_dir=Path(identity.state_dir),
                device_id=identity.device_id,
                settings=settings,
            )
            self.deliveries.append(delivery.start())

    def serving(self) -> list[int]:
        return [d.serving()[0] for d in self.deliveries]

    def stop(self) -> None:
        for delivery in self.deliveries:
            delivery.stop()


def _publish_gated(fleet: Fleet, tmp_path: Path, *args: str) -> None:
    model = make_linear_model(tmp_path / "candidate" / "model.onnx", seed=CANDIDATE)
    result = runner.invoke(
        app, ["release", "publish", str(model.parent), *args, *fleet.operator_args]
    )
    assert result.exit_code == 0, result.output
    assert "gated rollout running: stage 1/" in result.output


def _status(fleet: Fleet, version: int) -> pb.GetReleaseStatusResponse:
    return fleet.control_stub().GetReleaseStatus(
        pb.GetReleaseStatusRequest(version=version), timeout=10
    )


def test_failing_devices_halt_the_rollout_before_half_the_fleet_and_roll_it_back(
    gated: Fleet, tmp_path: Path
) -> None:
    devices = Devices(gated, 10)
    good = publish_linear(gated.coordinator.releases, tmp_path, seed=GOOD, percent=100)
    assert good.manifest.version == 1
    # Three devices hold an accuracy floor the candidate fails: the first canary, one of the
    # 30% stage, and one that only the 50% stage would reach.
    unhealthy = {devices.order[rank]: 0.9 for rank in (0, 2, 6)}
    devices.start(unhealthy)
    try:
        wait_for(lambda: devices.serving() == [1] * 10)
        _publish_gated(
            gated,
            tmp_path,
            "--stages", "10,30,50,100", "--max-failure-rate", "0.2",
            "--min-devices", "3", "--stage-wait", "0.5",
        )  # fmt: skip
        wait_for(lambda: _status(gated, CANDIDATE).release.rollout.state == "halted", 90)
        status = _status(gated, CANDIDATE)
        rollout = status.release.rollout
        assert rollout.stage == 1 and status.release.percent == 30  # never reached 50%
        assert status.release.withdrawn
        assert "failure rate 0.67 (2 of 3 devices: refused 0, failed 0, rolled back 2)" in (
            rollout.reason
        )
        assert "the fleet was rolled back with release 3" in rollout.reason
        offered = {d.device_id: d.state for d in status.devices}
        assert offered == {
            devices.order[0]: "rolled_back",
            devices.order[1]: "installed",
            devices.order[2]: "rolled_back",
        }
        assert all("accuracy" in d.reason for d in status.devices if d.state == "rolled_back")

        # Release 3 re-ships the good model to everyone: the whole fleet runs it.
        rollback = _status(gated, 3).release
        assert rollback.rollback_of == CANDIDATE and rollback.percent == 100
        wait_for(lambda: devices.serving() == [3] * 10, 90)
        wait_for(lambda: _status(gated, 3).release.states["installed"] == 10)

        cli = runner.invoke(app, ["release", "status", "2", *gated.operator_args])
        assert cli.exit_code == 0, cli.output
        assert "gated rollout halted: stage 2/4" in cli.output
        assert "rolled back with release 3" in cli.output
        events = [e.message for e in gated.coordinator.state.events()]
        assert any("release 2: stage 2/4, 30%" in m for m in events)
        assert not any("release 2: stage 3/4" in m for m in events)
        assert any("release 2: rollout halted: failure rate 0.67" in m for m in events)
    finally:
        devices.stop()


def test_a_healthy_rollout_reaches_the_whole_fleet_on_its_own(gated: Fleet, tmp_path: Path) -> None:
    devices = Devices(gated, 10)
    publish_linear(gated.coordinator.releases, tmp_path, seed=GOOD, percent=100)
    devices.start({d: 0.9 for d in devices.order[:3]})  # floors the candidate passes, below
    try:
        wait_for(lambda: devices.serving() == [1] * 10)
        # The candidate here is the good model's twin: it passes every floor.
        model = make_linear_model(tmp_path / "twin" / "model.onnx", seed=GOOD)
        result = runner.invoke(
            app,
            [
                "release", "publish", str(model.parent), "--stages", "10,50,100",
                "--max-failure-rate", "0.2", "--min-devices", "3", "--stage-wait", "0.3",
                *gated.operator_args,
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        wait_for(lambda: _status(gated, 2).release.rollout.state == "completed", 90)
        status = _status(gated, 2)
        assert status.release.percent == 100 and status.release.rollout.stage == 2
        assert status.release.states["installed"] == 10
        assert devices.serving() == [2] * 10
        # The rollout is marked completed just before its event is recorded: wait for it.
        wait_for(
            lambda: any(
                "release 2: rollout completed" in e.message
                for e in gated.coordinator.state.events()
            )
        )
        events = [e.message for e in gated.coordinator.state.events()]
        assert any("release 2: stage 2/3, 50%" in m for m in events)
        assert any("release 2: stage 3/3, 100%" in m for m in events)
        assert any("release 2: rollout completed, 10 installed" in m for m in events)
    finally:
        devices.stop()


def test_a_paused_rollout_survives_a_restart_and_resumes(tmp_path: Path) -> None:
    fleet = start_fleet(tmp_path, rollout_check_seconds=0.2)
    config = fleet.coordinator.config
    devices = Devices(fleet, 4)
    try:
        devices.start({})
        _publish_gated(fleet, tmp_path, "--stages", "25,100", "--stage-wait", "0")
        paused = runner.invoke(app, ["release", "pause", "1", *fleet.operator_args])
        assert paused.exit_code == 0, paused.output
        assert "gated rollout paused: stage 1/2" in paused.output
        wait_for(lambda: sorted(devices.serving()) == [0, 0, 0, 1])  # the one canary
        time.sleep(1.0)  # the gate looks five times: a paused rollout is not promoted
        assert _status(fleet, 1).release.percent == 25
    finally:
        devices.stop()
        fleet.close()

    restarted = Coordinator(CoordinatorConfig(**{**config.__dict__, "address": "127.0.0.1:0"}))
    restarted.start()
    try:
        again = Fleet(restarted, tmp_path)
        assert _status(again, 1).release.rollout.state == "paused"
        resumed = runner.invoke(app, ["release", "resume", "1", *again.operator_args])
        assert resumed.exit_code == 0, resumed.output
        # Its one canary had installed before the restart: the next stage starts on its own.
        wait_for(lambda: _status(again, 1).release.percent == 100, 30)
        assert _status(again, 1).release.rollout.stage == 1
        # Aborted with nothing earlier to go back to: it is held at 0% and says so.
        aborted = runner.invoke(app, ["release", "abort", "1", *again.operator_args])
        assert aborted.exit_code == 0, aborted.output
        assert "gated rollout aborted" in aborted.output and "held at 0%" in aborted.output
        assert _status(again, 1).release.percent == 0
    finally:
        restarted.stop(grace=0.5)


def test_bad_rollout_options_are_one_line_errors(fleet: Fleet, tmp_path: Path) -> None:
    model = make_linear_model(tmp_path / "m" / "model.onnx", seed=1)
    for args, message in (
        (["--stages", "50,10,100"], "--stages: '50,10,100' must increase"),
        (["--stages", "10,50"], "--stages: '10,50' must end at 100"),
        (["--stages", "ten"], "--stages: 'ten' must be percentages"),
        (["--stages", "10,100", "--max-failure-rate", "1.5"], "--max-failure-rate: 1.5"),
        (["--stages", "10,100", "--min-devices", "0"], "--min-devices: 0"),
        (["--stages", "10,100", "--percent", "5"], "--percent: give either"),
    ):
        result = runner.invoke(
            app, ["release", "publish", str(model.parent), *args, *fleet.operator_args]
        )
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    assert fleet.coordinator.releases.list_releases() == []
    missing = runner.invoke(app, ["release", "pause", "4", *fleet.operator_args])
    assert missing.exit_code == 2 and "release 4 has no gated rollout" in missing.output
