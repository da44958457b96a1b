"""Transport benchmark: the fleet protocol against plain TCP, and grpc rounds against local.

1. Throughput: a model's arrays go to a device and back over the fleet protocol (mutual TLS,
   chunked streams, Flower serde) on loopback, against a plain TCP socket echoing the same
   bytes in the same run; in both, the echoing end is its own process (as a device is) and
   each receiver puts a payload in fresh memory. A bare TLS socket (Python's ssl, OpenSSL)
   echoing the same bytes shows what encryption alone costs against plain TCP. Round trips
   go to the peers in turn, so that all see the same state of a shared machine, and the best
   of ``--repeats`` of each after a warm-up turn counts, at each size of ``--megabytes``.
   Bar: the fleet >= 0.5 of plain TCP's throughput.
2. Round overhead: the same 10-device run on the ``grpc`` runtime (a coordinator here and 10
   edge agents, each its own process on one thread, TLS on) and on ``local``; the ratio of
   their median per-round times.

Prints one summary line per measurement and exits 1 when the throughput bar is missed.
``--quick`` uses smaller sizes; ``--skip-rounds`` measures throughput only.
"""

import argparse
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedge.app.arrays import array_values
from fedge.app.config import RunConfig
from fedge.coordinator.config import CoordinatorConfig
from fedge.coordinator.grid import GrpcGrid
from fedge.coordinator.pki import init_certs
from fedge.coordinator.server import Coordinator
from fedge.data.device import DeviceDataSpec, write_device_data
from fedge.edge.agent import AgentSettings, EdgeAgent
from fedge.edge.identity import DeviceIdentity, enroll_device, load_identity
from fedge.protocol.pki import fingerprint
from fedge.protocol.tokens import make_token
from fedge.runtime.local import set_server_identity

# Peers run in child processes started afresh (no fork of a process running gRPC threads).
_SPAWN = multiprocessing.get_context("spawn")
# The fleet protocol (mutual TLS, chunked) moves model arrays at least half as fast as plain TCP.
BAR_FLEET_OF_TCP = 0.5


def _coordinator(root: Path) -> Coordinator:
    init_certs(root / "certs", hosts=("127.0.0.1",))
    coordinator = Coordinator(
        CoordinatorConfig(
            address="127.0.0.1:0",
            enroll_address="127.0.0.1:0",
            state_dir=root / "state",
            certs_dir=root / "certs",
            heartbeat_seconds=0.5,
            liveness_seconds=5.0,
            wait_for_devices_seconds=60.0,
        )
    )
    coordinator.start()
    return coordinator


def _enroll(coordinator: Coordinator, root: Path, name: str) -> DeviceIdentity:
    issued = coordinator.state.create_token(ttl_seconds=60)
    token = make_token(issued.secret, fingerprint((root / "certs/enroll.pem").read_bytes()))
    return enroll_device(
        coordinator=f"127.0.0.1:{coordinator.ports['fleet']}",
        enroll_address=f"127.0.0.1:{coordinator.ports['enroll']}",
        token=token,
        state_dir=root / name,
        name=name,
    )


def _echo_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    def echo(msg: Message, context: Context) -> Message:
        arrays = msg.content.array_records["arrays"]
        metrics = MetricRecord({"num-examples": 1})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    return app


def _echo_device(state_dir: str) -> None:
    """Child process: the enrolled device at ``state_dir`` echoing every task's arrays."""
    agent = EdgeAgent(
        load_identity(Path(state_dir)),
        data_dir=Path(state_dir),
        settings=AgentSettings(wait_seconds=1, heartbeat_seconds=0.5),
        client_app=_echo_app(),
    )
    agent.run()


class FleetEcho:
    """A coordinator here and an echoing device in its own process, as on a real network."""

    def __init__(self, root: Path) -> None:
        self._coordinator = _coordinator(root)
        self._identity = _enroll(self._coordinator, root, "echo")
        self._device = _SPAWN.Process(target=_echo_device, args=(str(root / "echo"),), daemon=True)
        self._device.start()
        set_server_identity(1)
        self._grid = GrpcGrid(
            self._coordinator.hub,
            run_id=1,
            run_config=RunConfig().to_run_config(),
            nodes=lambda: [self._identity.node_id],
        )
        list(self._grid.get_node_ids())

    def round_trip(self, weights: np.ndarray) -> float:
        """Seconds to send ``weights`` to the device as a task and have them back."""
        msg = Message(
            RecordDict({"arrays": ArrayRecord({"w": Array(weights)})}),
            self._identity.node_id,
            MessageType.TRAIN,
            group_id="1",
        )
        started = time.perf_counter()
        (reply,) = self._grid.send_and_receive([msg], timeout=300)
        # The reply's arrays as a NumPy array over the received bytes (mutual TLS
        # authenticates them, so no SHA-256), as the TCP peer ends with its bytes in a buffer.
        echoed = array_values(reply.content.array_records["arrays"]["w"])
        seconds = time.perf_counter() - started
        assert echoed.shape == weights.shape
        return seconds

    def close(self) -> None:
        """Stop the device and the coordinator."""
        self._device.terminate()
        self._device.join(30)
        self._coordinator.stop(grace=0.5)


def _echo(server: socket.socket, certs_dir: str | None) -> None:
    """Child process: on the first connection (TLS with the coordinator's server certificate
    if ``certs_dir``), echo each payload, sent with its size first (8 bytes)."""
    conn, _ = server.accept()
    if certs_dir is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(f"{certs_dir}/server.pem", f"{certs_dir}/server.key")
        conn = context.wrap_socket(conn, server_side=True)
    with conn:
        while header := _receive(conn, bytearray(8)):
            conn.sendall(_receive(conn, bytearray(int.from_bytes(header, "little"))))


def _receive(conn: socket.socket, buf: bytearray) -> bytearray:
    """``buf`` filled from ``conn``; empty if the peer closed the connection first."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        count = conn.recv_into(view[got:])
        if not count:
            return bytearray()
        got += count
    return buf


class SocketEcho:
    """A bare loopback socket to an echoing process: plain TCP, or TLS (Python's ssl, that is
    OpenSSL) when given the coordinator's certificates. Each receiver puts a payload in a fresh
    buffer, as the fleet's receivers do."""

    def __init__(self, certs_dir: Path | None = None) -> None:
        server = socket.create_server(("127.0.0.1", 0))
        certs = None if certs_dir is None else str(certs_dir)
        self._process = _SPAWN.Process(target=_echo, args=(server, certs), daemon=True)
        self._process.start()
        conn = socket.create_connection(("127.0.0.1", server.getsockname()[1]))
        server.close()
        if certs_dir is not None:
            context = ssl.create_default_context(cafile=str(certs_dir / "ca.pem"))
            conn = context.wrap_socket(conn, server_hostname="127.0.0.1")
        self._conn = conn

    def round_trip(self, payload: bytes) -> float:
        """Seconds to send ``payload`` and receive it back into a buffer."""
        started = time.perf_counter()
        self._conn.sendall(len(payload).to_bytes(8, "little"))
        self._conn.sendall(payload)
        echoed = _receive(self._conn, bytearray(len(payload)))
        seconds = time.perf_counter() - started
        assert len(echoed) == len(payload)
        return seconds

    def close(self) -> None:
        """Close the connection, which ends the echoing process."""
        self._conn.close()
        self._process.join(30)


@dataclass(frozen=True)
class Throughput:
    """Best round-trip throughput (bytes/s) of each peer at one payload size."""

    megabytes: int
    fleet: float
    tcp: float
    tls: float


def throughput(root: Path, megabytes: int, repeats: int) -> Throughput:
    """The fleet, plain TCP and a bare TLS socket echoing ``megabytes`` of model arrays.

    Round trips go to the three in turn, so that all see the same state of a shared machine,
    and the best of ``repeats`` of each counts; the first turn warms up and is not counted.
    """
    weights = np.random.default_rng(0).standard_normal(megabytes * 2**18, dtype=np.float32)
    payload = weights.tobytes()
    tcp, fleet = SocketEcho(), FleetEcho(root)
    tls = SocketEcho(root / "certs")
    try:
        turns = [
            (tcp.round_trip(payload), fleet.round_trip(weights), tls.round_trip(payload))
            for _ in range(repeats + 1)
        ]
    finally:
        for peer in (tcp, fleet, tls):
            peer.close()
    best = [min(times) for times in zip(*turns[1:], strict=True)]
    tcp_rate, fleet_rate, tls_rate = (2 * len(payload) / seconds for seconds in best)
    return Throughput(megabytes, fleet=fleet_rate, tcp=tcp_rate, tls=tls_rate)


def _training_device(state_dir: str, data_dir: str) -> None:
    """Child process: the enrolled device at ``state_dir`` training on ``data_dir``."""
    torch.set_num_threads(1)  # as local's clients: each trains on one thread
    EdgeAgent(
        load_identity(Path(state_dir)),
        data_dir=Path(data_dir),
        settings=AgentSettings(wait_seconds=2, heartbeat_seconds=0.5),
    ).run()


def grpc_rounds(root: Path, config: RunConfig) -> float:
    """Median seconds per round of ``config`` on the grpc runtime, each device a process."""
    from fedge.app.server import run_federation

    coordinator = _coordinator(root)
    devices = []
    try:
        for i in range(config.clients):
            _enroll(coordinator, root, f"dev{i}")
            data = write_device_data(
                root / f"data{i}",
                DeviceDataSpec(
                    dataset=config.dataset,
                    partition_id=i,
                    num_partitions=config.clients,
                    seed=config.seed,
                ),
            )
            args = (str(root / f"dev{i}"), str(data))
            devices.append(_SPAWN.Process(target=_training_device, args=args, daemon=True))
            devices[-1].start()
        set_server_identity(1)
        grid = GrpcGrid(
            coordinator.hub,
            run_id=1,
            run_config=config.to_run_config(),
            nodes=lambda: [n + 1 for n in range(config.clients)],
            min_replies=config.clients,
        )
        deadline = time.monotonic() + 120
        while len(coordinator.hub.online(range(1, config.clients + 1))) < config.clients:
            if time.monotonic() > deadline:
                raise RuntimeError("devices did not connect")
            time.sleep(0.2)
        result = run_federation(grid, config)
        return statistics.median(r.seconds for r in result.rounds)
    finally:
        for device in devices:
            device.terminate()
        for device in devices:
            device.join(30)
        coordinator.stop(grace=0.5)


def local_rounds(config: RunConfig) -> float:
    """Median seconds per round of ``config`` on the local runtime."""
    from fedge.simulation import simulate

    simulate(config.replace(rounds=1))  # warm-up: first-use costs are not round overhead
    result = simulate(config)
    return statistics.median(r.seconds for r in result.rounds)


def main() -> int:
    """Run both measurements and print their summaries; exit 1 when a throughput misses the bar."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, nargs="+", default=[64, 16])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-rounds", action="store_true")
    args = parser.parse_args()
    sizes = [16] if args.quick else args.megabytes
    # One torch thread for both runtimes: on a shared machine, oversubscribed OpenMP threads
    # slow one runtime or the other by several times and the ratio would measure that instead.
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="fedge-bench-"))
    meets = True
    try:
        for megabytes in sizes:
            result = throughput(root / f"throughput{megabytes}", megabytes, args.repeats)
            ratio = result.fleet / result.tcp
            meets &= ratio >= BAR_FLEET_OF_TCP
            print(
                f"transport: {megabytes} MB of model arrays echoed (best of {args.repeats}, "
                f"peers in turn): fleet protocol (mutual TLS, chunked) "
                f"{result.fleet / 2**20:.0f} MB/s vs plain TCP {result.tcp / 2**20:.0f} MB/s "
                f"= {ratio:.2f} (bar >= {BAR_FLEET_OF_TCP:g}: "
                f"{'PASS' if ratio >= BAR_FLEET_OF_TCP else 'FAIL'}); a bare TLS "
                f"socket {result.tls / 2**20:.0f} MB/s = {result.tls / result.tcp:.2f} of TCP, "
                f"the fleet {result.fleet / result.tls:.2f} of it; load "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
            )
        if args.skip_rounds:
            return 0 if meets else 1
        config = RunConfig(
            dataset="mnist-5k", model="cnn-small", clients=10, rounds=args.rounds, seed=0
        )
        local = local_rounds(config)
        grpc_ = grpc_rounds(root / "rounds", config.replace(runtime="grpc"))
        print(
            f"round overhead: 10 devices, mnist-5k/cnn-small, median grpc {grpc_:.2f}s/round vs "
            f"local "
            f"{local:.2f}s/round = {grpc_ / local:.2f}x (+{grpc_ - local:.2f}s per round)"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if meets else 1


if __name__ == "__main__":
    sys.exit(main())
