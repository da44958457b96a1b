"""A real deployment on loopback: ``fedge coordinator`` and ``fedge edge`` processes, TLS on.

Every process is started in its own session and killed by the fixture's finalizer, whatever
the test did. Operator polling goes through the control service directly (a CLI process per
poll would spend most of its time importing torch).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedge.cli._control import connect_control
from fedge.v1 import control_pb2 as pb

FEDGE = [sys.executable, "-c", "from fedge.cli.main import app; app()"]
# ``fedge`` as on a device without fedge[train]: importing torch, Opacus or Flower fails, and
# ``find_spec`` says they are not installed.
FEDGE_WITHOUT_TORCH = [
    sys.executable,
    "-c",
    "import sys; sys.modules.update(torch=None, opacus=None, flwr=None); "
    "from fedge.cli.main import app; app()",
]


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A coordinator and its devices, as processes under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.enroll_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # One torch thread per process: several devices share this machine's few cores, and
        # oversubscribed OpenMP threads spin instead of working.
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "FEDGE_COORDINATOR": self.address,
            "FEDGE_OPERATOR": str(root / "certs" / "operator"),
        }
        (root / "coordinator.toml").write_text(
            "[coordinator]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            f'enroll-address = "127.0.0.1:{self.enroll_port}"\n'
            'state-dir = "state"\ncerts-dir = "certs"\n'
            "heartbeat-seconds = 0.5\nliveness-seconds = 3.0\n"
            "wait-for-devices-seconds = 60.0\nmax-attempts = 3\n"
        )

    def cli(
        self,
        *args: str,
        timeout: float = 120.0,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one ``fedge`` command to completion (in the coordinator's directory, with the
        cluster's environment, unless told otherwise)."""
        return subprocess.run(
            [*FEDGE, *args],
            cwd=cwd or self.root,
            env=self.env if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, name: str, *args: str, command: list[str] = FEDGE) -> subprocess.Popen[bytes]:
        """Start a long-running ``fedge`` process (logged to ``name.log``)."""
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [*command, *args],
            cwd=self.root,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to process ``name`` and reap it."""
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def kill_all(self) -> None:
        """Kill every process still running (the finalizer)."""
        for name in list(self.procs):
            self.kill(name)

    def start_coordinator(self) -> None:
        """Start the coordinator and wait until the control service answers."""
        self.spawn("coordinator", "coordinator", "start", "--config", "coordinator.toml")
        self.wait_for(lambda: self.control("ListRuns", pb.ListRunsRequest()) is not None, 90)

    def enroll(
        self, i: int, *, fmt: str = "npz", partitions: int = 3, dataset: str = "mnist-5k"
    ) -> None:
        """Enrol device ``i`` and write its data (simulated client ``i``'s partition)."""
        from fedge.data.device import DeviceDataSpec, write_device_data
        from fedge.edge.identity import enroll_device

        # The library call `fedge edge enroll` makes, over real gRPC to the coordinator process
        # (a CLI process per device would mostly import torch).
        token = self.control("CreateEnrollToken", pb.CreateEnrollTokenRequest()).token
        enroll_device(
            coordinator=self.address,
            token=token,
            state_dir=self.root / f"dev{i}/state",
            name=f"device-{i}",
            enroll_address=f"127.0.0.1:{self.enroll_port}",
        )

        write_device_data(
            self.root / f"dev{i}" / "data",
            DeviceDataSpec(dataset=dataset, partition_id=i, num_partitions=partitions, format=fmt),
        )

    def start_edge(self, i: int) -> None:
        """Start device ``i``'s agent."""
        self.spawn(
            f"edge{i}",
            "edge",
            "start",
            "--state",
            f"dev{i}/state",
            "--data",
            f"dev{i}/data",
            "--wait",
            "2",
            "--heartbeat",
            "0.5",
        )

    def control(self, method: str, request: Any) -> Any:
        """Call the control service as the operator; ``None`` if it is unreachable."""
        channel, stub = connect_control(self.address, operator_dir=self.root / "certs/operator")
        try:
            return getattr(stub, method)(request, timeout=10)
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
            raise
        finally:
            channel.close()

    def run(self, run_id: int = 0) -> Any:
        """``GetRun`` for ``run_id`` (0 = latest)."""
        return self.control("GetRun", pb.GetRunRequest(run_id=run_id))

    def devices(self) -> list[Any]:
        """The fleet, as the operator sees it."""
        response = self.control("ListDevices", pb.ListDevicesRequest())
        return list(response.devices) if response is not None else []

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Poll ``predicate`` until true; fail with the logs after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.5)
        logs = {p.name: p.read_text()[-1500:] for p in self.root.glob("*.log")}
        pytest.fail(f"timed out after {timeout}s; logs: {json.dumps(logs, indent=1)}")

    def wait_run_done(self, timeout: float) -> Any:
        """Wait until the latest run is no longer queued or running; its GetRun reply."""
        final = pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_STOPPED

        def done() -> bool:
            reply = self.run()
            return reply is not None and reply.run.state in final

        self.wait_for(done, timeout)
        return self.run()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A PKI and a coordinator config in ``tmp_path`` (nothing started); every process the
    test starts is killed at the end."""
    from fedge.coordinator.pki import init_certs

    c = Cluster(tmp_path)
    init_certs(tmp_path / "certs", hosts=("127.0.0.1",))
    try:
        yield c
    finally:
        c.kill_all()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running coordinator with three enrolled, connected devices, shared by a module's
    tests (process start-up dominates their time); every process is killed at the end."""
    from fedge.coordinator.pki import init_certs

    root = tmp_path_factory.mktemp("deployment")
    c = Cluster(root)
    init_certs(root / "certs", hosts=("127.0.0.1",))
    try:
        c.start_coordinator()
        for i in range(3):
            c.enroll(i)
            c.start_edge(i)
        c.wait_for(lambda: sum(d.state == "idle" for d in c.devices()) == 3, 120)
        yield c
    finally:
        c.kill_all()
