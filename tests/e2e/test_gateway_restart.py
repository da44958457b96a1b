"""A site gateway SIGKILLed while its devices are connected comes back at once, as deployed.

Real processes on loopback with TLS: a cloud coordinator, one site gateway and two devices
behind it. The gateway is killed with its devices' connections open (their sockets linger in
``TIME_WAIT`` on its ports), started again on the same ports without a token, and the next run
gets one reply from the site for both devices.
"""

import json
from typing import Any

import pytest

from fedge.v1 import control_pb2 as pb

from .conftest import Cluster
from .test_gateway_e2e import _device, _gateway

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUN = {"dataset": "mnist-5k", "model": "cnn-small", "clients": 2, "seed": 0, "release": False}


def _run_one_round(cluster: Cluster) -> Any:
    request = pb.StartRunRequest(config_json=json.dumps({**RUN, "rounds": 1}))
    cluster.control("StartRun", request)
    reply = cluster.wait_run_done(timeout=240)
    assert reply.run.state == pb.RUN_STATE_COMPLETED, reply.run.error
    return reply


def test_a_killed_gateway_restarts_at_once_and_serves_its_site(cluster: Cluster) -> None:
    cluster.start_coordinator()
    ports = _gateway(cluster, "site-a", cluster.address)

    def idle() -> int:
        return sum(d.state == "idle" for d in cluster.devices() if d.kind == "device")

    def gateway_state() -> str:
        return next((d.state for d in cluster.devices() if d.kind == "gateway"), "")

    cluster.wait_for(lambda: gateway_state() == "online", 120)
    for i in range(2):
        _device(cluster, i, "site-a", ports)
    cluster.wait_for(lambda: idle() == 2, 180)

    cluster.kill("gateway-site-a")  # SIGKILL, its devices' connections open
    restarted = cluster.spawn(
        "gateway-site-a-again",
        *("gateway", "start", "--config", "site-a.toml", "--coordinator", cluster.address),
    )
    log = cluster.root / "gateway-site-a-again.log"

    def serving() -> bool:
        assert restarted.poll() is None, log.read_text()  # it exited: it could not listen
        return "devices on port" in log.read_text()

    cluster.wait_for(serving, 60)
    assert "enrolled as" not in log.read_text()  # the identity it had, no token spent
    cluster.wait_for(lambda: gateway_state() == "online" and idle() == 2, 120)

    reply = _run_one_round(cluster)
    (only,) = reply.rounds
    assert (only.sampled, only.aggregated) == (2, 2)
    assert [(s.site, s.replies, s.aggregated) for s in only.sites] == [("site-a", 1, 2)]
