"""Over-the-air delivery and hot-swap benchmark (issue 6), each figure against a peer in the run.

1. Throughput: one artifact downloaded over ModelHubService (real gRPC server on 127.0.0.1)
   against a plain TCP socket moving the same bytes. Bar: gRPC >= 0.5 of TCP. The same
   download over TLS, as devices fetch from the coordinator, is printed beside it: what
   encryption costs on top of the protocol.
2. Fan-out: 100 concurrent devices (own channel each) fetch a 10 MB artifact from a hub running
   in its own process; total time against 100x one device, and the hub's peak memory.
3. Hot swap: 50 model swaps while a client sends predictions continuously over InferenceService;
   failed requests (bar: zero) and p99 latency during swaps against p99 without swaps.

Prints one summary line (and details with --verbose) and exits 1 when a bar is missed.
Seeds are fixed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

from fedge.coordinator.hub import serve_hub
from fedge.coordinator.pki import init_certs
from fedge.edge.inference import InferenceEngine, serve_inference
from fedge.protocol.transport import ClientTLS, ServerTLS, create_channel
from fedge.protocol.wire import use_zero_copy_streams
from fedge.release.store import ReleaseStore
from fedge.release.testing import make_linear_model
from fedge.v1 import hub_pb2, hub_pb2_grpc, inference_pb2, inference_pb2_grpc

CHUNK = 256 * 1024
GRPC_OPTIONS = [("grpc.max_receive_message_length", 8 * 1024 * 1024)]


def _artifact(path: Path, megabytes: int, seed: int) -> Path:
    path.write_bytes(np.random.default_rng(seed).bytes(megabytes * 1024 * 1024))
    return path


def _grpc_fetch(port: int, sha: str, chunk_size: int, tls: ClientTLS | None = None) -> None:
    """Download a whole artifact on a fresh channel (a device), checking its hash; over TLS
    (the server authenticated, as devices see the coordinator) if ``tls``."""
    address = f"127.0.0.1:{port}"
    if tls is None:
        channel = grpc.insecure_channel(address, options=GRPC_OPTIONS)
    else:
        channel = create_channel(address, tls=tls)
    with channel:
        stub = hub_pb2_grpc.ModelHubServiceStub(channel)
        # As the device's updater does (fedge.edge.updater.GrpcHubClient).
        use_zero_copy_streams(stub, channel, hub_pb2.DESCRIPTOR.services_by_name["ModelHubService"])
        digest = hashlib.sha256()
        request = hub_pb2.DownloadArtifactRequest(
            sha256=sha, offset=0, chunk_size=chunk_size, device_id="bench-device"
        )
        for reply in stub.DownloadArtifact(request, timeout=600):
            digest.update(reply.data)
        if digest.hexdigest() != sha:
            raise RuntimeError("gRPC download corrupted")


def _tcp_server(path: Path) -> tuple[socket.socket, int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, open(path, "rb") as handle:
                conn.sendfile(handle)  # zero-copy: the strongest plain-TCP peer

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def _tcp_fetch(port: int, sha: str) -> None:
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        while block := conn.recv(CHUNK):
            digest.update(block)
    if digest.hexdigest() != sha:
        raise RuntimeError("TCP download corrupted")


def bench_throughput(tmp: Path, megabytes: int) -> tuple[float, float, float]:
    """MB/s of gRPC, of gRPC over TLS and of plain TCP for the same file from the same process
    (best of 9 each, in turn)."""
    root = tmp / "throughput"
    store = ReleaseStore(root=root)
    sha, _ = store.add_artifact(_artifact(tmp / "thr.bin", megabytes, 1))
    store.close()
    hub = _Hub(root, sha)
    grpc_times, tls_times, tcp_times = [], [], []
    try:
        _grpc_fetch(hub.port, sha, 0)  # warm up
        _grpc_fetch(hub.tls_port, sha, 0, hub.tls)
        for _ in range(9):  # in turn, best of 9: the machine is shared and noisy
            # The hub's default chunk size, as devices use.
            start = time.perf_counter()
            _grpc_fetch(hub.port, sha, 0)
            grpc_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            _grpc_fetch(hub.tls_port, sha, 0, hub.tls)
            tls_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            _tcp_fetch(hub.tcp_port, sha)
            tcp_times.append(time.perf_counter() - start)
    finally:
        hub.close()
    return megabytes / min(grpc_times), megabytes / min(tls_times), megabytes / min(tcp_times)


def _vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def hub_process_main(root: str, sha: str) -> None:
    """Child (the coordinator): serve the store at ``root`` over gRPC, without and with TLS
    (the certificates under ``root/certs``), and the artifact ``sha`` over plain TCP as the
    peer; print the three ports; serve until stdin closes."""
    store = ReleaseStore(root=Path(root))
    server, port = serve_hub(store, max_workers=128)
    certs = Path(root) / "certs"
    tls = ServerTLS((certs / "server.pem").read_bytes(), (certs / "server.key").read_bytes())
    tls_server, tls_port = serve_hub(store, max_workers=128, tls=tls)
    listener, tcp_port = _tcp_server(store.artifacts.path(sha))
    sys.stdout.write(f"{port} {tls_port} {tcp_port}\n")
    sys.stdout.flush()
    sys.stdin.read()
    listener.close()
    server.stop(grace=None)
    tls_server.stop(grace=None)


class _Hub:
    """A hub child process for one stored artifact."""

    def __init__(self, root: Path, sha: str) -> None:
        init_certs(root / "certs", hosts=("127.0.0.1",))
        self.tls = ClientTLS(ca_pem=(root / "certs/ca.pem").read_bytes())
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-hub", str(root), "--sha", sha],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ports = [int(p) for p in self.proc.stdout.readline().split()]
        self.port, self.tls_port, self.tcp_port = ports

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def bench_fanout(tmp: Path, devices: int) -> tuple[float, float, float, float]:
    """(total s for ``devices`` concurrent, one device s, hub RSS before MB, hub peak MB)."""
    root = tmp / "fanout"
    store = ReleaseStore(root=root)
    sha, _ = store.add_artifact(_artifact(tmp / "ten.bin", 10, 2))
    store.close()
    hub = _Hub(root, sha)
    try:
        _grpc_fetch(hub.port, sha, 0)  # warm up (page cache, code paths)
        idle_kb = _vm_kb(hub.proc.pid, "VmRSS")
        singles = []
        for _ in range(3):
            start = time.perf_counter()
            _grpc_fetch(hub.port, sha, 0)
            singles.append(time.perf_counter() - start)
        one = statistics.median(singles)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=devices) as pool:
            list(pool.map(lambda _i: _grpc_fetch(hub.port, sha, 0), range(devices)))
        total = time.perf_counter() - start
        peak_kb = _vm_kb(hub.proc.pid, "VmHWM")
    finally:
        hub.close()
    return total, one, idle_kb / 1024, peak_kb / 1024


def _client_loop(
    stub: inference_pb2_grpc.InferenceServiceStub,
    stop: threading.Event,
    latencies: list[float],
    failures: list[str],
) -> None:
    x = np.random.default_rng(0).standard_normal((1, 784)).astype("<f4")
    request = inference_pb2.PredictRequest(
        input=inference_pb2.Tensor(shape=[1, 784], data=x.tobytes())
    )
    while not stop.is_set():
        start = time.perf_counter()
        try:
            stub.Predict(request, timeout=10)
            latencies.append((time.perf_counter() - start) * 1000)
        except grpc.RpcError as exc:
            failures.append(str(exc.code()))


def bench_hot_swap(tmp: Path, swaps: int) -> tuple[int, int, float, float]:
    """(requests during swaps, failed, p99 ms during swaps, p99 ms without)."""
    models = [
        make_linear_model(tmp / f"swap{i}.onnx", features=784, classes=10, seed=i) for i in range(2)
    ]
    engine = InferenceEngine()
    engine.swap(models[0], 1)
    server, port = serve_inference(engine)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            runs: dict[str, tuple[list[float], list[str]]] = {}
            for phase in ("calm", "swaps"):
                latencies: list[float] = []
                failures: list[str] = []
                stop = threading.Event()
                client = threading.Thread(
                    target=_client_loop, args=(stub, stop, latencies, failures)
                )
                client.start()
                for i in range(swaps):
                    time.sleep(0.04)
                    if phase == "swaps":
                        engine.swap(models[i % 2], i + 2)
                stop.set()
                client.join(timeout=30)
                runs[phase] = (latencies, failures)
    finally:
        server.stop(grace=None)
    calm, during = runs["calm"][0], runs["swaps"][0]
    return (
        len(during) + len(runs["swaps"][1]),
        len(runs["swaps"][1]) + len(runs["calm"][1]),
        float(np.percentile(during, 99)),
        float(np.percentile(calm, 99)),
    )


def main() -> int:
    """Run the three measurements and print the one-line summary; 1 when a bar is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve-hub", help=argparse.SUPPRESS)
    parser.add_argument("--sha", help=argparse.SUPPRESS)
    parser.add_argument("--megabytes", type=int, default=32, help="throughput artifact size")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--swaps", type=int, default=50)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    if args.serve_hub:
        hub_process_main(args.serve_hub, args.sha)
        return 0
    with tempfile.TemporaryDirectory(prefix="fedge-delivery-") as name:
        tmp = Path(name)
        grpc_mbs, tls_mbs, tcp_mbs = bench_throughput(tmp, args.megabytes)
        total, one, idle_mb, peak_mb = bench_fanout(tmp, args.devices)
        requests, failed, p99_swap, p99_calm = bench_hot_swap(tmp, args.swaps)
    ratio = grpc_mbs / tcp_mbs
    fan = total / (args.devices * one)
    ok = ratio >= 0.5 and failed == 0
    print(
        f"delivery: {'PASS' if ok else 'FAIL'} | gRPC without TLS {grpc_mbs:.0f} MB/s vs TCP "
        f"{tcp_mbs:.0f} MB/s = {ratio:.2f} (bar 0.5); over TLS, as devices fetch, "
        f"{tls_mbs:.0f} MB/s = {tls_mbs / tcp_mbs:.2f} | {args.devices} devices x 10 MB in "
        f"{total:.2f} s vs "
        f"{args.devices}x one ({args.devices * one:.2f} s) = {fan:.2f}, hub peak RSS "
        f"{peak_mb:.0f} MB (idle {idle_mb:.0f} MB) | {args.swaps} hot swaps: {failed} failed of "
        f"{requests} requests, p99 {p99_swap:.2f} ms vs {p99_calm:.2f} ms without = "
        f"{p99_swap / p99_calm:.2f}x"
    )
    if args.verbose:
        print(f"  one device 10 MB: {one:.3f} s; cpu count {os.cpu_count()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
