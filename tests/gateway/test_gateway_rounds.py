"""Cloud rounds through a site gateway: one reply per site and round, the flat run's result (also
under central DP, with the flat run's ε), and a cut-off site dropped with its reason, then back."""

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from fedge.app.config import RunConfig
from fedge.cli.main import app
from fedge.data.device import DeviceDataSpec, write_device_data
from fedge.simulation import simulate
from fedge.v1 import control_pb2 as pb

from .conftest import SITE, Site, wait_for

RUN = {"dataset": "digits", "model": "cnn-small", "local-epochs": 1, "release": False, "seed": 0}


def _run(site: Site, **options: Any) -> Any:
    control = site.fleet.control_stub()
    request = pb.StartRunRequest(config_json=json.dumps({**RUN, **options}))
    run_id = control.StartRun(request, timeout=30).run.run_id
    done = (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_STOPPED)

    def finished() -> bool:
        return control.GetRun(pb.GetRunRequest(run_id=run_id)).run.state in done

    wait_for(finished, 120, f"run {run_id}")
    reply = control.GetRun(pb.GetRunRequest(run_id=run_id))
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    return reply


def _flat(tmp: Any, **options: Any) -> Any:
    config = RunConfig.from_mapping({**RUN, **options})
    return simulate(config, device_state_root=tmp)


def test_a_site_answers_each_round_once_with_the_flat_result(site: Site, tmp_path: Any) -> None:
    for i in range(2):
        site.trainer(f"cam-{i}", partition=i, partitions=2)
    reply = _run(site, clients=2, rounds=2)
    flat = _flat(tmp_path / "flat", clients=2, rounds=2)
    for got, want in zip(reply.rounds, flat.rounds, strict=True):
        assert abs(got.accuracy - want.accuracy) <= 0.01
        ((share,),) = [list(got.sites)]  # the cloud heard from the site once
        assert (share.site, share.replies, share.asked, share.aggregated) == (SITE, 1, 2, 2)
        assert (got.sampled, got.aggregated) == (2, 2)
        assert share.examples == sum(len(p) for p in _partition_sizes(2))
    status = CliRunner().invoke(app, ["run", "status", *site.fleet.operator_args])
    assert f"round 2: site {SITE} (gateway gw-" in status.output
    assert "1 reply for 2/2 devices" in status.output

    # central DP: clipped at the gateway, noised once at the cloud; the flat run's epsilon
    dp = {"dp-noise": 0.8, "dp-clip": 0.5, "dp-seed": 3}
    reply = _run(site, clients=2, rounds=2, **dp)
    flat = _flat(tmp_path / "flat-dp", clients=2, rounds=2, **dp)
    for got, want in zip(reply.rounds, flat.rounds, strict=True):
        assert got.epsilon == want.extra["epsilon"]
        assert abs(got.accuracy - want.accuracy) <= 0.01
        assert [s.replies for s in got.sites] == [1]

    # local DP: each device's own ledger, its epsilon reported through the gateway
    _run(site, clients=2, rounds=1, model="dp-cnn", **{"local-dp-noise": 1.0})
    rows = site.fleet.control_stub().ListDevices(pb.ListDevicesRequest()).devices
    spent = {d.name: d.privacy_spent for d in rows if d.kind == "device"}
    for i, agent in enumerate(site.agents):
        ledger = Path(agent[0].identity.state_dir) / "privacy-ledger.json"
        assert ledger.is_file()
        assert spent[f"cam-{i}"] > 0


def _partition_sizes(partitions: int) -> list[list[int]]:
    from fedge.app.client import simulated_partitions

    config = RunConfig.from_mapping({**RUN, "clients": partitions})
    return [list(y) for _, y in simulated_partitions(config, partitions)]


def test_a_cut_off_site_is_dropped_with_why_and_rejoins(site: Site) -> None:
    cloud_device = site.fleet.trainer("cloud-cam")  # a device of the cloud itself
    data = site.root / "cloud-cam-data"
    write_device_data(
        data, DeviceDataSpec(dataset="digits", partition_id=2, num_partitions=3, format="npz")
    )
    site.run_device(cloud_device, data)
    for i in range(2):
        site.trainer(f"cam-{i}", partition=i, partitions=3)
    control = site.fleet.control_stub()

    def connected() -> int:
        rows = control.ListDevices(pb.ListDevicesRequest()).devices
        return sum(d.state == "idle" for d in rows if d.kind == "device")

    wait_for(lambda: connected() == 3, 20, "three devices")
    site.link.cut()
    wait_for(lambda: connected() == 1, 20, "the cloud to see the site go")
    request = pb.StartRunRequest(config_json=json.dumps({**RUN, "clients": 3, "rounds": 3}))
    run_id = control.StartRun(request, timeout=30).run.run_id

    def rounds() -> list[Any]:
        return list(control.GetRun(pb.GetRunRequest(run_id=run_id)).rounds)

    wait_for(lambda: len(rounds()) >= 1, 60, "round 1")
    site.link.restore()
    first = rounds()[0]
    assert (first.sampled, first.aggregated) == (3, 1)
    assert len(first.drops) == 2
    assert all(f"site {SITE} unreachable" in d.reason for d in first.drops)
    cut_share = next(s for s in first.sites if s.site == SITE)
    assert (cut_share.replies, cut_share.aggregated) == (0, 0)
    wait_for(
        lambda: control.GetRun(pb.GetRunRequest(run_id=run_id)).run.state == pb.RUN_STATE_COMPLETED,
        90,
        "the run to complete",
    )
    later = rounds()[1:]
    assert any((r.sampled, r.aggregated) == (3, 3) for r in later)  # the site is back
    back = next(r for r in later if r.aggregated == 3)
    assert sorted((s.site, s.replies) for s in back.sites) == [("", 1), (SITE, 1)]


def test_a_round_waits_for_a_gateway_that_goes_silent_as_for_its_devices(site: Site) -> None:
    for i in range(2):
        site.trainer(f"cam-{i}", partition=i, partitions=2)
    control = site.fleet.control_stub()

    def states() -> dict[str, str]:
        rows = control.ListDevices(pb.ListDevicesRequest()).devices
        return {d.kind + ":" + d.name: d.state for d in rows}

    wait_for(lambda: list(states().values()).count("idle") == 2, 20, "two devices")
    site.link.cut()  # the gateway goes silent just as a run starts (a restart, say)
    request = pb.StartRunRequest(config_json=json.dumps({**RUN, "clients": 2, "rounds": 1}))
    run_id = control.StartRun(request, timeout=30).run.run_id
    wait_for(lambda: states()["gateway:gw-a"] == "offline", 20, "the cloud to miss the gateway")
    site.link.restore()  # back within the run's wait for its devices (liveness + 4 s)

    def finished() -> bool:
        return control.GetRun(pb.GetRunRequest(run_id=run_id)).run.state == pb.RUN_STATE_COMPLETED

    wait_for(finished, 90, "the run to complete")
    reply = control.GetRun(pb.GetRunRequest(run_id=run_id))
    (only,) = reply.rounds
    assert (only.sampled, only.aggregated, list(only.drops)) == (2, 2, [])
    assert [(s.site, s.replies) for s in only.sites] == [(SITE, 1)]
    assert not [e for e in reply.events if e.kind in ("round-failed", "dropped")], reply.events
