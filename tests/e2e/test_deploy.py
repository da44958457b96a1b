"""A real deployment: a coordinator and three edge processes on loopback, TLS on.

The tests share one deployment (module fixture) and run in order: a clean run, impossible
options refused, a run nobody can train, a device killed mid-round, the coordinator killed
mid-run, a second coordinator on the same port. Each starts its own run and checks it.
"""

import json
import signal

import pytest

from fedge.app.config import RunConfig
from fedge.simulation import simulate
from fedge.v1 import control_pb2 as pb

from .conftest import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMALL = {"dataset": "mnist-5k", "model": "cnn-small", "clients": 3, "seed": 0, "release": False}


def _start_run(cluster: Cluster, **options: object) -> int:
    request = pb.StartRunRequest(config_json=json.dumps({**SMALL, **options}))
    return int(cluster.control("StartRun", request).run.run_id)


def _local(rounds: int) -> float:
    config = RunConfig(dataset="mnist-5k", model="cnn-small", clients=3, seed=0, rounds=rounds)
    return simulate(config.replace(release=False)).final_accuracy


def test_three_devices_match_the_local_runtime(deployment: Cluster) -> None:
    cluster = deployment
    started = cluster.cli(
        *("run", "start", "--dataset", "mnist-5k", "--model", "cnn-small"),
        *("--clients", "3", "--rounds", "3", "--seed", "0", "--no-release"),
    )
    assert started.returncode == 0, started.stderr
    reply = cluster.wait_run_done(timeout=240)
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    assert [(r.sampled, r.aggregated) for r in reply.rounds] == [(3, 3)] * 3
    assert abs(reply.rounds[-1].accuracy - _local(3)) <= 0.01
    status = cluster.cli("run", "status", str(reply.run.run_id), "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == "completed" and [r["replied"] for r in shown["rounds"]] == [3, 3, 3]
    assert any(e["kind"] == "devices" for e in shown["events"])
    # fedge's log speaks for fedge: Flower's per-round INFO lines are not in it.
    lines = (cluster.root / "coordinator.log").read_text().splitlines()
    flower = [x for x in lines if "configure_train" in x]
    assert flower == [], flower


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--clients", "3", "--min-clients", "5"), "--min-clients: 5 is above --clients 3"),
        (("--clients", "5"), "--clients: 5 is above the 3 enrolled devices that can train"),
        (
            ("--dataset", "digits", "--model", "mlp", "--clients", "3"),
            "does not fit the data of 3 of the 3 devices",
        ),
        (("--set", "device-state-root=/tmp/x"), "device-state-root: '/tmp/x' is not a known"),
    ],
)
def test_impossible_options_are_refused_at_start(
    deployment: Cluster, options: tuple[str, ...], message: str
) -> None:
    before = len(deployment.control("ListRuns", pb.ListRunsRequest()).runs)
    refused = deployment.cli("run", "start", *options)
    assert refused.returncode == 2, refused.stdout
    assert message in refused.stderr and "Traceback" not in refused.stderr
    assert len(deployment.control("ListRuns", pb.ListRunsRequest()).runs) == before


def test_a_run_no_device_can_train_fails_with_each_devices_reason(deployment: Cluster) -> None:
    cluster = deployment
    # Each device's budget is below what one DP-SGD task costs: all three refuse.
    run_id = _start_run(cluster, rounds=2, **{"local-dp-noise": 1.0, "local-dp-epsilon": 0.01})
    reply = cluster.wait_run_done(timeout=240)
    assert reply.run.run_id == run_id
    assert reply.run.state == pb.RUN_STATE_FAILED
    assert "round 1: 0 of 3 devices gave a usable update" in reply.run.error
    assert reply.rounds == []  # no round nobody trained is recorded, no model published
    dropped = [e for e in reply.events if e.kind == "dropped"]
    assert {e.device_id for e in dropped} == {d.device_id for d in cluster.devices()}
    assert all("privacy budget exhausted" in e.message for e in dropped)
    kinds = [e.kind for e in reply.events]
    assert kinds.count("retry") == 2 and kinds[-1] == "failed"
    run_dir = cluster.root / "state" / "runs" / f"run-{run_id:05d}"
    assert not (run_dir / "release").exists() and not (run_dir / "model.pt").exists()


def test_device_killed_mid_round_then_rejoins(deployment: Cluster) -> None:
    cluster = deployment
    # Many rounds, so the run is still going when the restarted device is back; stopped below.
    # Rounds long enough (the larger model, 3 epochs) that the kill lands before the victim's
    # reply, however stale the "training" state it last reported.
    options = {"min-clients": 2, "local-epochs": 3, "model": "fedavg-cnn"}
    run_id = _start_run(cluster, rounds=40, **options)
    victim = next(d for d in cluster.devices() if d.name == "device-2")

    def victim_state() -> str:
        return next(d.state for d in cluster.devices() if d.device_id == victim.device_id)

    cluster.wait_for(lambda: victim_state() == "training", 120)
    cluster.kill("edge2")  # SIGKILL while it trains
    cluster.wait_for(lambda: len(cluster.run(run_id).rounds) >= 1, 120)
    first = cluster.run(run_id).rounds[0]
    assert (first.sampled, first.aggregated) == (3, 2)  # completed with the two that answered
    (drop,) = first.drops
    assert drop.device_id == victim.device_id and "offline" in drop.reason
    cluster.start_edge(2)
    cluster.wait_for(lambda: victim_state() in ("idle", "training"), 120)
    done = len(cluster.run(run_id).rounds)

    def rejoined() -> bool:
        # a round after the restart that all three devices completed
        return any((r.sampled, r.aggregated) == (3, 3) for r in cluster.run(run_id).rounds[done:])

    cluster.wait_for(rejoined, 180)
    cluster.control("StopRun", pb.StopRunRequest(run_id=run_id))
    reply = cluster.wait_run_done(timeout=120)
    assert reply.run.state == pb.RUN_STATE_STOPPED


def test_coordinator_killed_mid_run_resumes_with_the_whole_fleet(deployment: Cluster) -> None:
    cluster = deployment
    run_id = _start_run(cluster, rounds=4)
    cluster.wait_for(lambda: len(cluster.run(run_id).rounds) >= 1, 120)
    cluster.kill("coordinator", signal.SIGKILL)
    cluster.start_coordinator()  # no operator action: the run resumes, devices reconnect
    reply = cluster.wait_run_done(timeout=240)
    assert reply.run.run_id == run_id
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    assert [r.server_round for r in reply.rounds] == [1, 2, 3, 4]
    assert [(r.sampled, r.aggregated) for r in reply.rounds] == [(3, 3)] * 4
    assert any(e.kind == "resumed" and "after round" in e.message for e in reply.events)
    assert abs(reply.rounds[-1].accuracy - _local(4)) <= 0.01  # as if never interrupted
    for i in range(3):  # a lost link is one readable line on the device, no raw gRPC dump
        log = (cluster.root / f"edge{i}.log").read_text()
        assert "_InactiveRpcError" not in log and "Traceback" not in log
    # results.json lists the rounds before the restart too, as the database does
    results = cluster.root / "state" / "runs" / f"run-{run_id:05d}" / "results.json"
    written = json.loads(results.read_text())
    assert [r["round"] for r in written["rounds"]] == [1, 2, 3, 4]
    assert written["final"]["accuracy"] == pytest.approx(reply.rounds[-1].accuracy)


def test_a_second_coordinator_on_the_same_port_exits_2(deployment: Cluster) -> None:
    before = sorted(p.name for p in (deployment.root / "state").iterdir())
    second = deployment.cli("coordinator", "start", "--config", "coordinator.toml", timeout=120)
    assert second.returncode == 2, second.stdout
    assert "address in use" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr  # one line, nothing else
    assert sorted(p.name for p in (deployment.root / "state").iterdir()) == before
    assert deployment.control("ListRuns", pb.ListRunsRequest()) is not None  # the first serves on
