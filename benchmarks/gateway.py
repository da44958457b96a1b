"""Site gateways benchmark: what the cloud receives per round, flat against behind gateways.

The same fleet of devices (default 100) is deployed twice in this process, on loopback with
TLS: flat (every device talks to the cloud coordinator) and behind site gateways (default 4,
25 devices each). Both run the same training run (digits, cnn-small, 1 local epoch, seed 0).
A counting TCP relay in front of the cloud's port measures every byte the cloud receives while
the run goes: the devices' (or gateways') results, but also heartbeats, site syncs, polls and
TLS framing. Goal: 25x fewer bytes behind 4 gateways of 25 devices (each gateway sends one
aggregate instead of 25 updates). The round time of both is the cloud's own, per round.

Prints one summary line (details with --verbose) and exits 1 when the goal is missed. Seeds
are fixed.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.pki import init_certs
from fedge.coordinator.server import Coordinator
from fedge.data.device import DeviceDataSpec, write_device_data
from fedge.edge.agent import AgentSettings, EdgeAgent
from fedge.edge.identity import DeviceIdentity, enroll_device
from fedge.gateway.config import GatewayConfig
from fedge.gateway.server import Gateway
from fedge.protocol.transport import ClientTLS, create_channel
from fedge.v1 import control_pb2 as pb
from fedge.v1 import control_pb2_grpc

# Each of 4 gateways sends one aggregate in place of its 25 devices' updates.
GOAL_FEWER_BYTES_X = 25.0
RUN = {"dataset": "digits", "model": "cnn-small", "local-epochs": 1, "seed": 0, "release": False}


class CountingRelay:
    """A TCP relay to ``target`` that counts the bytes flowing towards it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self.received = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self._target)
            except OSError:  # the cloud is gone (the end of a deployment)
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, inbound: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if inbound:
                    with self._lock:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()

    def close(self) -> None:
        self._listener.close()


class Deployment:
    """A cloud coordinator behind a counting relay, and what it takes to reach it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        init_certs(root / "certs", hosts=("127.0.0.1",))
        config = CoordinatorConfig(
            address="127.0.0.1:0",
            enroll_address="127.0.0.1:0",
            state_dir=root / "state",
            certs_dir=root / "certs",
            heartbeat_seconds=1.0,
            liveness_seconds=15.0,
            wait_for_devices_seconds=60.0,
            max_workers=256,  # every device's long poll holds a worker
        )
        self.cloud = Coordinator(config)
        self.cloud.start()
        self.relay = CountingRelay(("127.0.0.1", self.cloud.ports["fleet"]))
        self.enroll_address = f"127.0.0.1:{self.cloud.ports['enroll']}"
        op = root / "certs" / "operator"
        tls = ClientTLS(
            ca_pem=(op / "ca.pem").read_bytes(),
            cert_pem=(op / "operator.pem").read_bytes(),
            key_pem=(op / "operator.key").read_bytes(),
        )
        self._channel = create_channel(f"127.0.0.1:{self.cloud.ports['fleet']}", tls=tls)
        self.control = control_pb2_grpc.ControlServiceStub(self._channel)
        self.agents: list[tuple[EdgeAgent, threading.Thread]] = []
        self.gateways: list[Gateway] = []

    def token(self, **kwargs: Any) -> str:
        return str(self.control.CreateEnrollToken(pb.CreateEnrollTokenRequest(**kwargs)).token)

    def device(self, identity: DeviceIdentity, partition: int, partitions: int) -> None:
        data = self.root / f"data-{partition}"
        write_device_data(
            data,
            DeviceDataSpec(
                dataset=str(RUN["dataset"]), partition_id=partition, num_partitions=partitions
            ),
        )
        agent = EdgeAgent(
            identity,
            data_dir=data,
            settings=AgentSettings(wait_seconds=5.0, heartbeat_seconds=1.0),
        )
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()
        self.agents.append((agent, thread))

    def gateway(self, site: str) -> Gateway:
        gateway = Gateway(
            GatewayConfig(
                address="127.0.0.1:0",
                enroll_address="127.0.0.1:0",
                hosts=("127.0.0.1",),
                state_dir=self.root / site,
                heartbeat_seconds=1.0,
                liveness_seconds=15.0,
                sync_seconds=1.0,
                max_workers=64,
            )
        )
        gateway.start(
            coordinator=self.relay.address,
            token=self.token(site=site, gateway=True),
            name=site,
            enroll_address=self.enroll_address,
        )
        self.gateways.append(gateway)
        return gateway

    def wait_idle(self, count: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            devices = self.control.ListDevices(pb.ListDevicesRequest()).devices
            if sum(d.state == "idle" for d in devices if d.kind == "device") >= count:
                return
            time.sleep(0.5)
        raise RuntimeError(f"fewer than {count} devices connected within {timeout}s")

    def run(self, clients: int, rounds: int) -> tuple[int, list[float], list[int]]:
        """Bytes the cloud received during the run, its round times, replies per round."""
        before = self.relay.received
        request = pb.StartRunRequest(
            config_json=json.dumps({**RUN, "clients": clients, "rounds": rounds})
        )
        run_id = self.control.StartRun(request).run.run_id
        while True:
            reply = self.control.GetRun(pb.GetRunRequest(run_id=run_id))
            if reply.run.state not in (pb.RUN_STATE_QUEUED, pb.RUN_STATE_RUNNING):
                break
            time.sleep(0.2)
        if reply.run.state != pb.RUN_STATE_COMPLETED:
            raise RuntimeError(f"run {run_id} ended {reply.run.state}: {reply.run.error}")
        received = self.relay.received - before
        replies = [
            sum(s.replies for s in r.sites) if r.sites else r.aggregated for r in reply.rounds
        ]
        return received, [r.seconds for r in reply.rounds], replies

    def close(self) -> None:
        for agent, _ in self.agents:
            agent.stop()
        for _, thread in self.agents:  # before their servers go, or gRPC complains
            thread.join(timeout=30)
        for gateway in self.gateways:
            gateway.stop(grace=0.5)
        self._channel.close()
        self.cloud.stop(grace=0.5)
        self.relay.close()


def flat(root: Path, devices: int, rounds: int) -> tuple[int, list[float], list[int]]:
    """Every device enrolled at, and talking to, the cloud."""
    deployment = Deployment(root)
    try:
        for i in range(devices):
            identity = enroll_device(
                coordinator=deployment.relay.address,
                token=deployment.token(),
                state_dir=root / f"dev{i}",
                enroll_address=deployment.enroll_address,
            )
            deployment.device(identity, i, devices)
        deployment.wait_idle(devices)
        return deployment.run(devices, rounds)
    finally:
        deployment.close()


def sites(
    root: Path, devices: int, gateways: int, rounds: int
) -> tuple[int, list[float], list[int]]:
    """The devices behind ``gateways`` site gateways (contiguous partitions per site)."""
    deployment = Deployment(root)
    try:
        per_site = devices // gateways
        for g in range(gateways):
            site = f"site-{g + 1}"
            gateway = deployment.gateway(site)
            for j in range(per_site):
                i = g * per_site + j
                identity = enroll_device(
                    coordinator=f"127.0.0.1:{gateway.ports['fleet']}",
                    token=deployment.token(site=site),
                    state_dir=root / f"dev{i}",
                    enroll_address=f"127.0.0.1:{gateway.ports['enroll']}",
                )
                deployment.device(identity, i, devices)
        deployment.wait_idle(per_site * gateways)
        return deployment.run(per_site * gateways, rounds)
    finally:
        deployment.close()


def _timed(fn: Callable[[], tuple[int, list[float], list[int]]]) -> tuple[Any, float]:
    started = time.perf_counter()
    return fn(), time.perf_counter() - started


def main() -> int:
    """Run both deployments, print the summary; exit 1 when the ratio misses the goal."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default=RUN["dataset"])
    parser.add_argument("--model", default=RUN["model"])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    RUN.update(dataset=args.dataset, model=args.model)
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="fedge-gateway-bench-") as tmp:
        (flat_bytes, flat_rounds, flat_replies), flat_s = _timed(
            lambda: flat(Path(tmp) / "flat", args.devices, args.rounds)
        )
        (site_bytes, site_rounds, site_replies), site_s = _timed(
            lambda: sites(Path(tmp) / "sites", args.devices, args.gateways, args.rounds)
        )
    per_round_flat = flat_bytes / args.rounds
    per_round_sites = site_bytes / args.rounds
    fewer = per_round_flat / per_round_sites
    meets = fewer >= GOAL_FEWER_BYTES_X
    print(
        f"gateway ({args.dataset}/{args.model}): cloud received {per_round_flat / 1e6:.2f} "
        f"MB/round flat ({args.devices} devices, {flat_replies[0]} replies) vs "
        f"{per_round_sites / 1e6:.3f} MB/round behind "
        f"{args.gateways} gateways ({site_replies[0]} replies): "
        f"{fewer:.1f}x fewer (goal {GOAL_FEWER_BYTES_X:g}x); median round "
        f"{statistics.median(flat_rounds):.2f}s flat vs {statistics.median(site_rounds):.2f}s "
        f"with gateways: {'MEETS' if meets else 'MISSES'} the goal"
    )
    if args.verbose:
        print(f"  flat rounds {flat_rounds} replies {flat_replies}; set-up and run {flat_s:.0f}s")
        print(f"  site rounds {site_rounds} replies {site_replies}; set-up and run {site_s:.0f}s")
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
