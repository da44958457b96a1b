"""On-device training: pull a task, run the ClientApp on local data, push the reply.

Only arrays and metrics leave the device: the ClientApp reads the raw data from ``data-dir``
and returns a Flower reply, which is serialized and streamed back in chunks. The reply is kept
on disk until the coordinator takes or refuses it (:class:`~fedge.edge.outbox.PendingResult`):
a device whose link is cut delivers it when the link returns, before it asks for new work,
even after a restart. This module needs ``fedge[train]`` (torch, Flower, Opacus); a device
without it never imports it.
"""

import json
import math
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from fedge.data.device import read_meta
from fedge.edge.identity import DeviceIdentity
from fedge.edge.outbox import PendingResult
from fedge.log import logger
from fedge.protocol.fleet import push_result, read_task, result_header
from fedge.protocol.messages import encode_message
from fedge.protocol.payload import EncodedMessage
from fedge.protocol.transport import TransportOptions
from fedge.v1 import fleet_pb2 as pb
from fedge.v1 import fleet_pb2_grpc

__all__ = ["TaskRunner"]

# The ClientApp caches data and models per process; agents sharing a process (tests,
# benchmarks) take turns.
_APP_LOCK = threading.Lock()


@dataclass
class _Task:
    header: Any
    message: Message


class TaskRunner:
    """Runs the fleet's training tasks of one device on its local data."""

    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        data_dir: Path,
        client_app: ClientApp | None = None,
        options: TransportOptions | None = None,
        task: str | None = None,
        step_delay: float = 0.0,
    ) -> None:
        from fedge.app.client import build_client_app

        self.identity = identity
        self.pending = PendingResult(Path(identity.state_dir))
        # Seconds added per training step, to emulate a slower device (tests, benchmarks).
        self.step_delay = step_delay
        self._app = client_app or build_client_app()
        self._options = options or TransportOptions()
        self._contexts: dict[int, Context] = {}
        meta = read_meta(data_dir)
        self._node_config: dict[str, Any] = {
            "data-dir": str(data_dir.resolve()),
            "state-dir": identity.state_dir,
        }
        if task is not None:
            self._node_config["task"] = task
        if "partition-id" in meta:  # a simulated partition: seed like the simulated client
            self._node_config["partition-id"] = int(meta["partition-id"])
            self._node_config["num-partitions"] = int(meta.get("num-partitions", 1))
        self.busy = False

    def serve_one(
        self,
        stub: fleet_pb2_grpc.FleetServiceStub,
        *,
        wait_seconds: float,
        rpc_timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> bool:
        """Deliver a kept result first; then pull one task (waiting up to ``wait_seconds``),
        run it and push its reply."""
        kept = self.pending.load()
        if kept is not None:
            logger.info("delivering the kept result of task %s", kept[0].task_id)
            self._send(stub, *kept, rpc_timeout, metadata)
        task = self._pull(stub, wait_seconds, rpc_timeout, metadata)
        if task is None:
            return False
        reply = self._handle(task)
        self._push(stub, task, reply, rpc_timeout, metadata)
        return True

    def _pull(
        self,
        stub: fleet_pb2_grpc.FleetServiceStub,
        wait_seconds: float,
        rpc_timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> _Task | None:
        stream = stub.PullTask(
            pb.PullTaskRequest(wait_seconds=wait_seconds),
            timeout=wait_seconds + rpc_timeout,
            metadata=metadata,
        )
        pulled = read_task(stream, require_sha256=self.identity.insecure)
        return None if pulled is None else _Task(*pulled)

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
        self.busy = True
        try:
            with _APP_LOCK:
                reply = self._app(task.message, context)
            self._emulate_slowness(task.message, reply)
            return reply
        except Exception as err:  # the coordinator must hear why, and the agent must go on
            logger.warning("ClientApp raised %s: %s", type(err).__name__, err)
            logger.debug("%s", traceback.format_exc())
            reason = f"{type(err).__name__}: {err}"
            return Message(
                Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=task.message
            )
        finally:
            self.busy = False

    def _emulate_slowness(self, message: Message, reply: Message) -> None:
        """Sleep ``step_delay`` per training step the reply took (epochs x batches)."""
        if self.step_delay <= 0 or reply.has_error():
            return
        config = message.content.config_records.get("config")
        metrics = next(iter(reply.content.metric_records.values()), None)
        if config is None or metrics is None:
            return
        examples = _number(metrics.get("num-examples"), 0.0)
        batch = max(_number(config.get("batch-size"), 32.0), 1.0)
        epochs = _number(config.get("local-epochs"), 1.0)
        time.sleep(self.step_delay * epochs * math.ceil(examples / batch))

    def _push(
        self,
        stub: fleet_pb2_grpc.FleetServiceStub,
        task: _Task,
        reply: Message,
        rpc_timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        payload = encode_message(reply)
        header = result_header(task.header, payload, insecure=self.identity.insecure)
        self.pending.save(header, payload)
        self._send(stub, header, payload, rpc_timeout, metadata)

    def _send(
        self,
        stub: fleet_pb2_grpc.FleetServiceStub,
        header: pb.ResultHeader,
        payload: EncodedMessage,
        rpc_timeout: float,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        """Push a kept result; forget it once taken or refused, keep it while unreachable."""
        chunk_bytes = self._options.chunk_bytes
        self.pending.deliver(
            lambda: push_result(
                stub,
                header,
                payload,
                chunk_bytes=chunk_bytes,
                timeout=rpc_timeout,
                metadata=metadata,
            )
        )


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) else default
