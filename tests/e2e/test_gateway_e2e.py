"""Sites with gateways, as deployed: a cloud coordinator, two site gateways and two devices behind
each, every one its own ``fedge`` process on loopback with TLS.

One sequence (process start-up dominates): a 3-round run reaches the flat 4-device run's accuracy
with the cloud receiving one reply per site and round; a central-DP run reports the flat run's
epsilon; a release reaches all four devices with one download from the cloud per gateway; with
site B's uplink cut, B's devices answer predictions and install the release B's gateway already
holds, a run goes on with site A (B dropped, with why) and B rejoins once the link is back, its
queued install report delivered.
"""

import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedge.app.config import RunConfig
from fedge.data.device import DeviceDataSpec, write_device_data
from fedge.edge.identity import enroll_device
from fedge.edge.slots import Slots
from fedge.release.testing import make_linear_model
from fedge.simulation import simulate
from fedge.v1 import control_pb2 as pb
from fedge.v1 import inference_pb2, inference_pb2_grpc

from ..conftest import LinkProxy
from .conftest import Cluster, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = {"dataset": "mnist-5k", "model": "cnn-small", "clients": 4, "seed": 0, "release": False}
DP = {"dp-noise": 0.7, "dp-clip": 1.0, "dp-seed": 1}


def _gateway(cluster: Cluster, site: str, upstream: str) -> dict[str, int]:
    """Start the gateway of ``site``, reaching the cloud at ``upstream``; its ports."""
    ports = {"fleet": free_port(), "enroll": free_port()}
    (cluster.root / f"{site}.toml").write_text(
        "[gateway]\n"
        f'address = "127.0.0.1:{ports["fleet"]}"\n'
        f'enroll-address = "127.0.0.1:{ports["enroll"]}"\n'
        f'state-dir = "{site}-state"\n'
        "heartbeat-seconds = 0.5\nliveness-seconds = 3.0\nsync-seconds = 0.5\n"
        "release-interval = 1.0\nround-margin-seconds = 5.0\n"
    )
    request = pb.CreateEnrollTokenRequest(site=site, gateway=True)
    token = cluster.control("CreateEnrollToken", request).token
    cluster.spawn(
        f"gateway-{site}",
        *("gateway", "start", "--config", f"{site}.toml", "--coordinator", upstream),
        *("--enroll-address", f"127.0.0.1:{cluster.enroll_port}", "--token", token),
    )
    return ports


def _device(cluster: Cluster, i: int, site: str, ports: dict[str, int]) -> int:
    """Enrol device ``i`` at ``site``'s gateway, write partition ``i`` of 4, start it; its
    inference port."""
    request = pb.CreateEnrollTokenRequest(site=site)
    token = cluster.control("CreateEnrollToken", request).token
    enroll_device(
        coordinator=f"127.0.0.1:{ports['fleet']}",
        token=token,
        state_dir=cluster.root / f"dev{i}/state",
        name=f"{site}-cam-{i}",
        enroll_address=f"127.0.0.1:{ports['enroll']}",
    )
    write_device_data(
        cluster.root / f"dev{i}/data",
        DeviceDataSpec(dataset="mnist-5k", partition_id=i, num_partitions=4),
    )
    inference = free_port()
    _start_device(cluster, i, inference)
    return inference


def _start_device(cluster: Cluster, i: int, inference: int) -> None:
    cluster.spawn(
        f"edge{i}",
        *("edge", "start", "--state", f"dev{i}/state", "--data", f"dev{i}/data"),
        *("--wait", "2", "--heartbeat", "0.5", "--release-interval", "1"),
        *("--inference", f"127.0.0.1:{inference}"),
    )


def _run(cluster: Cluster, **options: Any) -> int:
    request = pb.StartRunRequest(config_json=json.dumps({**RUN, **options}))
    return int(cluster.control("StartRun", request).run.run_id)


def _version(cluster: Cluster, i: int) -> int:
    slots = Slots(cluster.root / f"dev{i}" / "state")
    return slots.version_of(slots.state().serving)


def _predict(port: int) -> int:
    """Ask a device's running inference server; the release that answered."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        x = np.zeros((1, 16), dtype=np.float32)
        tensor = inference_pb2.Tensor(shape=list(x.shape), data=x.tobytes())
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return int(
            stub.Predict(inference_pb2.PredictRequest(input=tensor), timeout=10).model_version
        )
    finally:
        channel.close()


def _release(cluster: Cluster, seed: int) -> int:
    model = make_linear_model(cluster.root / f"linear-{seed}.onnx", seed=seed)
    out = cluster.cli("release", "publish", str(model), "--percent", "100", timeout=120)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("published release ")[1].split()[0].rstrip(":"))


def _status(cluster: Cluster, version: int) -> dict[str, int]:
    reply = cluster.control("GetReleaseStatus", pb.GetReleaseStatusRequest(version=version))
    return dict(reply.release.states)


def test_two_sites_train_ship_and_ride_out_a_cut_uplink(cluster: Cluster, tmp_path: Path) -> None:
    toml = cluster.root / "coordinator.toml"
    # A cut site costs each round this wait before the round goes on without it.
    toml.write_text(
        toml.read_text().replace("for-devices-seconds = 60.0", "for-devices-seconds = 6.0")
    )
    cluster.start_coordinator()
    link = LinkProxy(cluster.address)  # site B's uplink
    try:
        gateways = {"site-a": _gateway(cluster, "site-a", cluster.address)}
        gateways["site-b"] = _gateway(cluster, "site-b", link.address)

        def gateways_up() -> bool:
            rows = [d for d in cluster.devices() if d.kind == "gateway"]
            return len(rows) == 2 and all(d.state == "online" for d in rows)

        cluster.wait_for(gateways_up, 120)
        inference = {
            i: _device(cluster, i, site, gateways[site])
            for i, site in enumerate(["site-a", "site-a", "site-b", "site-b"])
        }

        def idle() -> int:
            return sum(d.state == "idle" for d in cluster.devices() if d.kind == "device")

        cluster.wait_for(lambda: idle() == 4, 180)

        # 1. three rounds: the flat run's accuracy, one reply per site and round
        started = cluster.cli("run", "start", *_flags(RUN), "--rounds", "3")
        assert started.returncode == 0, started.stderr
        reply = cluster.wait_run_done(timeout=240)
        assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
        flat = simulate(RunConfig.from_mapping({**RUN, "rounds": 3}), device_state_root=tmp_path)
        assert abs(reply.rounds[-1].accuracy - flat.final_accuracy) <= 0.01
        for r in reply.rounds:
            assert (r.sampled, r.aggregated) == (4, 4)
            assert sorted((s.site, s.replies, s.aggregated) for s in r.sites) == [
                ("site-a", 1, 2),
                ("site-b", 1, 2),
            ]
        status = cluster.cli("run", "status", "--json")
        shown = json.loads(status.stdout)["rounds"]
        assert [sum(s["replies"] for s in r["sites"]) for r in shown] == [2, 2, 2]
        listed = cluster.cli("fleet", "ls")
        assert listed.returncode == 0, listed.stderr
        for site in ("site-a", "site-b"):
            assert f"site {site}: gateway gw-" in listed.stdout
        assert listed.stdout.count("2 devices (2 connected)") == 2

        # 2. central DP: the flat run's epsilon with the same noise settings
        _run(cluster, rounds=2, **DP)
        reply = cluster.wait_run_done(timeout=240)
        assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
        flat_dp = simulate(
            RunConfig.from_mapping({**RUN, "rounds": 2, **DP}), device_state_root=tmp_path
        )
        assert [r.epsilon for r in reply.rounds] == [r.extra["epsilon"] for r in flat_dp.rounds]

        # 3. a release at 100%: all four devices, one download from the cloud per gateway
        first = _release(cluster, seed=1)
        cluster.wait_for(lambda: [_version(cluster, i) for i in range(4)] == [first] * 4, 120)
        cluster.wait_for(lambda: _status(cluster, first)["installed"] == 4, 30)
        assert _status(cluster, first)["downloads"] == 2

        # 4. device 3 is off when release 2 comes out; site B's gateway holds it for it
        cluster.kill("edge3")
        second = _release(cluster, seed=2)
        cluster.wait_for(lambda: [_version(cluster, i) for i in range(3)] == [second] * 3, 120)
        cluster.wait_for(lambda: _offered(cluster, second, "site-b-cam-3"), 30)

        # 5. B's uplink is cut: B's devices keep answering, device 3 installs from the cache
        link.cut()
        cluster.wait_for(lambda: idle() == 2, 60)
        assert _predict(inference[2]) == second
        _start_device(cluster, 3, inference[3])
        cluster.wait_for(lambda: _version(cluster, 3) == second, 120)
        cluster.wait_for(lambda: _predict(inference[3]) == second, 60)
        assert _status(cluster, second)["installed"] == 3  # device 3's report waits at B

        # 6. a run with B cut: B's devices dropped with why; B rejoins when the link is back
        run_id = _run(cluster, rounds=3)
        cluster.wait_for(lambda: len(cluster.run(run_id).rounds) >= 1, 120)
        link.restore()
        first_round = cluster.run(run_id).rounds[0]
        assert (first_round.sampled, first_round.aggregated) == (4, 2)
        assert all("site site-b unreachable" in d.reason for d in first_round.drops)
        reply = cluster.wait_run_done(timeout=240)
        assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
        assert any((r.sampled, r.aggregated) == (4, 4) for r in reply.rounds[1:])
        cluster.wait_for(lambda: _status(cluster, second)["installed"] == 4, 60)
        assert _status(cluster, second)["downloads"] == 2
        # and device 3's inference telemetry, kept at its gateway meanwhile
        device3 = next(d.device_id for d in cluster.devices() if d.name == "site-b-cam-3")
        request = pb.GetReleaseStatusRequest(version=second)
        cluster.wait_for(
            lambda: (
                device3
                in {t.device_id for t in cluster.control("GetReleaseStatus", request).telemetry}
            ),
            30,
        )
        # B's own log tells its operator what happened, in order
        log = (cluster.root / "gateway-site-b.log").read_text()
        marks = ["enrolled as gw-", "cloud link up (", "cloud link DOWN", "cloud link up again"]
        assert all(mark in log for mark in marks), log
        assert sorted(marks, key=log.index) == marks, log
        assert "WARNING fedge: enrolled" not in log  # news, not a warning
    finally:
        link.close()


def _flags(options: dict[str, Any]) -> list[str]:
    flags = [f"--{k}={v}" for k, v in options.items() if k != "release"]
    return [*flags, "--no-release"]


def _devices_of(cluster: Cluster, version: int) -> list[Any]:
    reply = cluster.control("GetReleaseStatus", pb.GetReleaseStatusRequest(version=version))
    return list(reply.devices)


def _offered(cluster: Cluster, version: int, name: str) -> bool:
    return any(d.name == name and d.state == "offered" for d in _devices_of(cluster, version))
