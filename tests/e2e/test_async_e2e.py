"""Buffered asynchronous aggregation on a real deployment: a coordinator and five edge
processes on loopback, TLS on.

Two devices are slow (an injected per-step delay, about ten times a fast device's training),
one is cut off from the coordinator while it trains, restarted while cut off, and reconnected
after several model versions. The run keeps making versions at the fast devices' pace, the cut
device's kept update is applied with its staleness weight when its link returns, and the final
model is within a point of the synchronous run (the local runtime's, which the deploy test
shows equal to a coordinator's).
"""

import json
import math
import urllib.request
from typing import Any

import pytest

from fedge.app.config import RunConfig
from fedge.simulation import simulate
from fedge.v1 import control_pb2 as pb

from ..conftest import LinkProxy
from .conftest import Cluster, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICES = 5
SLOW = (2, 3)  # about ten times slower than the fast devices
CUT = 4  # trains a little slower, so the test can cut its link mid-training
VERSIONS = 30
RUN = {
    "dataset": "mnist-5k",
    "model": "cnn-small",
    "clients": DEVICES,
    "seed": 0,
    "release": False,
}
SYNC_ROUNDS = 3
STEP_DELAY = {2: 0.12, 3: 0.12, 4: 0.1}


def _start_edge(cluster: Cluster, i: int, coordinator: str | None = None) -> None:
    args = ["--state", f"dev{i}/state", "--data", f"dev{i}/data", "--wait", "2"]
    args += ["--heartbeat", "0.5", "--release-interval", "3600"]
    if i in STEP_DELAY:
        args += ["--step-delay", str(STEP_DELAY[i])]
    if coordinator is not None:
        args += ["--coordinator", coordinator]
    cluster.spawn(f"edge{i}", "edge", "start", *args)


def _names(cluster: Cluster) -> dict[str, str]:
    """device name -> device id."""
    return {d.name: d.device_id for d in cluster.devices()}


def _state_of(cluster: Cluster, name: str) -> str:
    return next((d.state for d in cluster.devices() if d.name == name), "")


def _status(cluster: Cluster) -> dict[str, Any]:
    shown = cluster.cli("run", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    result: dict[str, Any] = json.loads(shown.stdout)
    return result


def _version(cluster: Cluster) -> int:
    run = cluster.run()
    return int(run.run.async_status.version) if run is not None else 0


def test_async_run_goes_at_the_fast_devices_pace_and_takes_a_cut_devices_update(
    cluster: Cluster,
) -> None:
    metrics_port = free_port()
    with (cluster.root / "coordinator.toml").open("a") as config:
        config.write(f'[metrics]\naddress = "127.0.0.1:{metrics_port}"\n')
    cluster.start_coordinator()
    link = LinkProxy(cluster.address)  # the cut device's only way to the coordinator
    try:
        for i in range(DEVICES):
            cluster.enroll(i, partitions=DEVICES)
            _start_edge(cluster, i, link.address if i == CUT else None)
        cluster.wait_for(lambda: sum(d.state == "idle" for d in cluster.devices()) == DEVICES, 120)
        ids = _names(cluster)
        started = cluster.cli(
            *("run", "start", "--dataset", "mnist-5k", "--model", "cnn-small", "--seed", "0"),
            *("--clients", str(DEVICES), "--rounds", str(VERSIONS), "--no-release"),
            *("--mode", "async", "--buffer", "2", "--concurrency", str(DEVICES)),
            *("--max-staleness", "100", "--staleness-weight", "poly:0.5"),
        )
        assert started.returncode == 0, started.stderr

        # Cut the device's link while it trains; its update is kept on disk.
        cluster.wait_for(lambda: _state_of(cluster, f"device-{CUT}") == "training", 60)
        link.cut()
        cut_at = _version(cluster)
        pending = cluster.root / f"dev{CUT}/state/pending-result/header.pb"
        cluster.wait_for(pending.is_file, 30)
        # A restart while cut off keeps it too.
        cluster.kill(f"edge{CUT}")
        _start_edge(cluster, CUT, link.address)
        log = cluster.root / f"edge{CUT}.log"
        cluster.wait_for(lambda: log.read_text().count("connecting to") >= 2, 60)
        cluster.wait_for(lambda: _version(cluster) >= cut_at + 5, 60)
        assert pending.is_file()
        restored_at = _version(cluster)
        link.restore()
        cluster.wait_for(lambda: not pending.exists(), 60)

        reply = cluster.wait_run_done(timeout=120)
        assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
        status = _status(cluster)
        text = cluster.cli("run", "status").stdout
        metrics = _scrape(metrics_port)
    finally:
        link.close()
    sync = simulate(RunConfig(**RUN, rounds=SYNC_ROUNDS)).final_accuracy
    _report_and_check(status, ids, cut_at=cut_at, restored_at=restored_at, sync=sync)
    # run status and /metrics say the same.
    a, run = status["async"], str(status["run"])
    assert f"async: model version {VERSIONS}, {a['in_buffer']}/2 updates in the buffer" in text
    assert f"applied {a['updates_applied']}, refused 0" in text
    assert f"{ids[f'device-{CUT}']} (staleness " in text
    assert metrics[("fedge_async_version", run)] == VERSIONS
    assert metrics[("fedge_async_updates_applied", run)] == a["updates_applied"]
    by_tau = {k[2]: v for k, v in metrics.items() if k[0] == "fedge_async_updates_by_staleness"}
    assert by_tau == {k: float(v) for k, v in a["staleness_histogram"].items()}


def _scrape(port: int) -> dict[tuple[str, ...], float]:
    """The coordinator's /metrics: (name, *label values) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, *s.labels.values()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _report_and_check(
    status: dict[str, Any], ids: dict[str, str], *, cut_at: int, restored_at: int, sync: float
) -> None:
    updates = [(r["round"], u) for r in status["rounds"] for u in r["updates"]]
    by_device = {
        name: [(v, u["staleness"], u["weight"]) for v, u in updates if u["device_id"] == ids[name]]
        for name in ids
    }
    a = status["async"]
    print(
        json.dumps(
            {
                "versions": a["version"],
                "sync_accuracy": sync,
                "async_accuracy": status["accuracy"],
                "cut_at": cut_at,
                "restored_at": restored_at,
                "updates": by_device,
                "staleness_histogram": a["staleness_histogram"],
                "refused": a["refused_by_reason"],
            }
        )
    )
    assert a["version"] == VERSIONS and status["rounds_done"] == VERSIONS
    # The run went at the fast devices' pace: versions advanced while the slow ones trained.
    fast = sum(len(by_device[f"device-{i}"]) for i in range(DEVICES) if i not in (*SLOW, CUT))
    slow = [tau for i in SLOW for _, tau, _ in by_device[f"device-{i}"]]
    assert fast >= VERSIONS, by_device
    # Every slow update started before a newer version existed; most of them several versions
    # back (a busy machine slows the fast devices too, so one may come back only 1 behind).
    assert slow and min(slow) >= 1 and sorted(slow)[len(slow) // 2] >= 2, by_device
    # The cut device's kept update, delivered after the link came back, weighed by staleness.
    late = [(v, tau, w) for v, tau, w in by_device[f"device-{CUT}"] if v > restored_at]
    assert late, by_device
    _, tau, weight = late[0]
    assert tau >= restored_at - cut_at >= 5
    assert weight == pytest.approx(1 / math.sqrt(1 + tau), rel=1e-4)
    # Within a point of the synchronous run.
    assert status["accuracy"] >= sync - 0.01, (status["accuracy"], sync)
