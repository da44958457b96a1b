"""The edge agent: heartbeats, pulls tasks, runs the ClientApp on local data, pushes results.

Only arrays and metrics leave the device: the ClientApp reads the raw data from ``data-dir``
and returns a Flower reply, which is serialized and streamed back in chunks. A lost
connection is retried with exponential backoff and full jitter; a refused identity (revoked,
unknown) stops the agent, since retrying cannot help.
"""

import json
import random
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedge import __version__
from fedge.coordinator.serde import (
    PayloadAssembler,
    decode_message,
    encode_message,
)
from fedge.edge.data import read_meta
from fedge.edge.identity import DeviceIdentity
from fedge.errors import FedgeError
from fedge.log import logger
from fedge.net import TransportOptions, chunk_encoder, create_channel, use_zero_copy_streams
from fedge.v1 import fleet_pb2 as pb
from fedge.v1 import fleet_pb2_grpc

__all__ = ["AgentSettings", "EdgeAgent", "RefusedError"]

_FATAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
# The ClientApp caches data and models per process; agents sharing a process (tests,
# benchmarks) take turns.
_APP_LOCK = threading.Lock()
_RESULT_CHUNK = chunk_encoder(pb.PushResultRequest)


class RefusedError(FedgeError):
    """The coordinator refused this device's identity (unknown, revoked or expired)."""


@dataclass(frozen=True)
class AgentSettings:
    """How the agent polls and backs off."""

    wait_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    rpc_timeout: float = 600.0
    max_tasks: int | None = None  # stop after this many tasks (tests)


@dataclass
class _Task:
    header: Any
    message: Message


class EdgeAgent:
    """Runs the task loop of one device until :meth:`stop` or a refused identity."""

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        data_dir: Path,
        settings: AgentSettings | None = None,
        client_app: ClientApp | None = None,
        options: TransportOptions | None = None,
    ) -> None:
        from fedge.app.client import build_client_app

        self.identity = identity
        self.data_dir = data_dir
        self.settings = settings or AgentSettings()
        self._app = client_app or build_client_app()
        self._options = options or TransportOptions()
        self._stop = threading.Event()
        self._contexts: dict[int, Context] = {}
        self._training = False
        self.tasks_done = 0
        self._interval = self.settings.heartbeat_seconds
        meta = read_meta(data_dir)
        self._node_config: dict[str, Any] = {
            "data-dir": str(data_dir.resolve()),
            "state-dir": identity.state_dir,
        }
        if "partition-id" in meta:  # a simulated partition: seed like the simulated client
            self._node_config["partition-id"] = int(meta["partition-id"])
            self._node_config["num-partitions"] = int(meta.get("num-partitions", 1))

    def stop(self) -> None:
        """Ask the loop to finish after the current call."""
        self._stop.set()

    def run(self) -> None:
        """Serve tasks until stopped; raises :class:`RefusedError` if the identity is refused."""
        delay = self.settings.backoff_initial
        while not self._stop.is_set():
            try:
                self._session()
                delay = self.settings.backoff_initial
            except grpc.RpcError as err:
                code = err.code()
                if code in _FATAL:
                    raise RefusedError(f"{code.name}: {err.details()}") from err
                sleep = random.uniform(0, delay)  # full jitter
                logger.warning("connection lost (%s); retrying in %.1fs", code.name, sleep)
                self._stop.wait(sleep)
                delay = min(delay * 2, self.settings.backoff_max)
            if self._done():
                return

    def _done(self) -> bool:
        limit = self.settings.max_tasks
        return limit is not None and self.tasks_done >= limit

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("fedge-device-id", self.identity.device_id),) if self.identity.insecure else ()

    def _session(self) -> None:
        channel = create_channel(
            self.identity.coordinator, tls=self.identity.tls(), options=self._options
        )
        fatal: list[grpc.RpcError] = []
        session_over = threading.Event()
        try:
            stub = fleet_pb2_grpc.FleetServiceStub(channel)
            use_zero_copy_streams(stub, channel, pb.DESCRIPTOR.services_by_name["FleetService"])
            self._heartbeat(stub)  # fails fast if the coordinator is down or refuses us
            beat = threading.Thread(
                target=self._heartbeats, args=(stub, session_over, fatal), daemon=True
            )
            beat.start()
            while not self._stop.is_set() and not fatal and not self._done():
                task = self._pull(stub)
                if task is not None:
                    self._push(stub, task, self._handle(task))
                    self.tasks_done += 1
            if fatal:
                raise fatal[0]
        finally:
            session_over.set()
            channel.close()

    def _heartbeat(self, stub: fleet_pb2_grpc.FleetServiceStub) -> None:
        state = pb.DEVICE_STATE_TRAINING if self._training else pb.DEVICE_STATE_IDLE
        response = stub.Heartbeat(
            pb.HeartbeatRequest(version=__version__, state=state),
            timeout=30,
            metadata=self._metadata(),
        )
        if response.interval_seconds > 0:  # the coordinator sets the pace
            self._interval = min(response.interval_seconds, self.settings.heartbeat_seconds)

    def _heartbeats(
        self, stub: fleet_pb2_grpc.FleetServiceStub, over: threading.Event, fatal: list[Any]
    ) -> None:
        while not over.wait(self._interval):
            try:
                self._heartbeat(stub)
            except grpc.RpcError as err:
                if err.code() in _FATAL:
                    fatal.append(err)
                    self._stop.set()
                    return
                logger.info("heartbeat failed: %s", err.code())

    def _pull(self, stub: fleet_pb2_grpc.FleetServiceStub) -> _Task | None:
        stream = stub.PullTask(
            pb.PullTaskRequest(wait_seconds=self.settings.wait_seconds),
            timeout=self.settings.wait_seconds + self.settings.rpc_timeout,
            metadata=self._metadata(),
        )
        header = None
        assembler = None
        for part in stream:
            if part.WhichOneof("part") == "header":
                header = part.header
                assembler = PayloadAssembler(
                    expected_bytes=header.payload_bytes,
                    part_bytes=header.part_bytes,
                    sha256=header.payload_sha256,
                    require_sha256=self.identity.insecure,
                )
            elif assembler is not None:
                assembler.add(part.chunk.data)
        if header is None or assembler is None:
            return None
        return _Task(header, decode_message(assembler.finish()))

    def _handle(self, task: _Task) -> Message:
        header = task.header
        context = self._contexts.get(header.run_id)
        if context is None:
            context = Context(
                run_id=header.run_id,
                node_id=header.node_id,
                node_config=dict(self._node_config),
                state=RecordDict(),
                run_config=json.loads(header.run_config_json),
            )
            self._contexts = {header.run_id: context}
        self._training = True
        try:
            with _APP_LOCK:
                return self._app(task.message, context)
        except Exception as err:  # the coordinator must hear why, and the agent must go on
            logger.warning("ClientApp raised %s: %s", type(err).__name__, err)
            logger.debug("%s", traceback.format_exc())
            reason = f"{type(err).__name__}: {err}"
            return Message(
                Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=task.message
            )
        finally:
            self._training = False

    def _push(self, stub: fleet_pb2_grpc.FleetServiceStub, task: _Task, reply: Message) -> None:
        payload = encode_message(reply)
        header = pb.ResultHeader(
            task_id=task.header.task_id,
            run_id=task.header.run_id,
            server_round=task.header.server_round,
            payload_bytes=payload.total_bytes,
            # Mutual TLS authenticates every record: the hash is only needed without.
            payload_sha256=payload.sha256 if self.identity.insecure else "",
            part_bytes=payload.part_bytes,
        )

        def parts() -> Iterator[pb.PushResultRequest | bytes]:
            yield pb.PushResultRequest(header=header)
            for data in payload.views(self._options.chunk_bytes):
                yield _RESULT_CHUNK(data)  # framed as bytes: see use_zero_copy_streams

        try:
            stub.PushResult(parts(), timeout=self.settings.rpc_timeout, metadata=self._metadata())
        except grpc.RpcError as err:
            code = err.code()
            if code in _FATAL or code == grpc.StatusCode.UNAVAILABLE:
                raise
            # Refused (stale, duplicate, invalid): the coordinator recorded why; carry on.
            logger.warning("result refused: %s: %s", code.name, err.details())
