"""A cloud round at a site gateway: pull the site's share, run it on the devices, answer once.

The cloud sends one task per site (its message, and the node ids of the site's devices it is
for). :class:`SiteRounds` queues the message for each of those devices on the gateway's own
task hub, collects their replies and aggregates them with :func:`fedge.app.sites.run_site`
(the checks the cloud makes, clipping under central DP, ``site-rounds`` local rounds), and
pushes the site's ONE reply upstream, well before the cloud's round timeout
(``round-margin-seconds``), so that devices that do not answer are dropped here with their
reason instead of costing the whole site its round.
"""

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import grpc
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from fedge.app.sites import aggregation_for, clip_norm_of, run_site
from fedge.gateway.uplink import LINK_DOWN, Uplink
from fedge.log import logger
from fedge.protocol.fleet import read_task
from fedge.protocol.messages import encode_message
from fedge.protocol.tasks import Task, TaskHub
from fedge.protocol.wire import chunk_encoder
from fedge.v1 import fleet_pb2 as pb

__all__ = ["SiteRounds"]

_RESULT_CHUNK = chunk_encoder(pb.PushResultRequest)
_GATEWAY_NODE_ID = 0  # the gateway is the server of its site's devices


class _HubExchange:
    """The site's devices, reached through the gateway's task hub."""

    def __init__(self, hub: TaskHub, header: Any, stop: threading.Event) -> None:
        self._hub = hub
        self._header = header
        self._stop = stop
        self._missing: dict[int, str] = {}

    def exchange(self, messages: list[Message], *, timeout: float) -> list[Message]:
        tasks = []
        for msg in messages:
            message_id = uuid4().hex
            msg.metadata.__dict__["_message_id"] = message_id
            msg.metadata.__dict__["_src_node_id"] = _GATEWAY_NODE_ID
            msg.metadata.__dict__["_run_id"] = self._header.run_id
            task = Task(
                task_id=message_id,
                node_id=int(msg.metadata.dst_node_id),
                run_id=self._header.run_id,
                server_round=self._header.server_round,
                message_type=msg.metadata.message_type,
                run_config_json=self._header.run_config_json,
                payload=encode_message(msg),
                reference=msg.content.array_records.get("arrays") if msg.has_content() else None,
            )
            tasks.append(task)
            self._hub.push(task)
        results = self._hub.collect(
            tasks, deadline=time.monotonic() + timeout, stopped=self._stop.is_set
        )
        self._missing = {
            t.node_id: (
                f"no reply within the site's share of the round ({timeout:.0f}s)"
                if self._hub.alive(t.node_id)
                else "not connected to its site gateway"
            )
            for t in tasks
            if t.task_id not in results
        }
        return [results[t.task_id] for t in tasks if t.task_id in results]

    def missing_reason(self, node_id: int) -> str:
        return self._missing.get(node_id, "no reply")


class SiteRounds:
    """Serves the cloud's site tasks, one at a time."""

    def __init__(
        self,
        *,
        uplink: Uplink,
        hub: TaskHub,
        margin_seconds: float,
        chunk_bytes: int,
        stop: threading.Event,
        rpc_timeout: float = 600.0,
    ) -> None:
        self._uplink = uplink
        self._hub = hub
        self._margin = margin_seconds
        self._chunk_bytes = chunk_bytes
        self._stop = stop
        self._rpc_timeout = rpc_timeout
        self.rounds_served = 0

    def serve_one(self, *, wait_seconds: float) -> bool:
        """Pull one site task (waiting up to ``wait_seconds``), run it, push the one reply."""
        pulled = self._pull(wait_seconds)
        if pulled is None:
            return False
        header, message = pulled
        reply = self._run(header, message)
        self._push(header, reply)
        self.rounds_served += 1
        return True

    def _run(self, header: Any, message: Message) -> Message:
        if not header.site_nodes:
            reason = "a site gateway only takes tasks for its site's devices"
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=message)
        run_config = json.loads(header.run_config_json)
        # Answer before the cloud gives up on the site: the margin is the upload's time.
        timeout = max(1.0, float(run_config.get("round-timeout", 600.0)) - self._margin)
        started = time.monotonic()
        result = run_site(
            message,
            [int(n) for n in header.site_nodes],
            _HubExchange(self._hub, header, self._stop),
            aggregation=aggregation_for(header.message_type, run_config),
            clip_norm=clip_norm_of(run_config),
            site_rounds=int(run_config.get("site-rounds", 1)),
            timeout=timeout,
        )
        logger.info(
            "run %d round %d (%s): %d of %d devices in %.1fs%s",
            header.run_id,
            header.server_round,
            header.message_type,
            len(result.metrics),
            len(header.site_nodes),
            time.monotonic() - started,
            "".join(f"; dropped node {n}: {r}" for n, r in result.dropped.items()),
        )
        return Message(result.to_content(), reply_to=message)

    def _pull(self, wait_seconds: float) -> tuple[Any, Message] | None:
        stream = self._uplink.fleet.PullTask(
            pb.PullTaskRequest(wait_seconds=wait_seconds),
            timeout=wait_seconds + self._rpc_timeout,
        )
        pulled = read_task(stream, require_sha256=False)
        self._uplink.mark(True)
        return pulled

    def _push(self, header: Any, reply: Message) -> None:
        payload = encode_message(reply)
        result = pb.ResultHeader(
            task_id=header.task_id,
            run_id=header.run_id,
            server_round=header.server_round,
            payload_bytes=payload.total_bytes,
            part_bytes=payload.part_bytes,
        )

        def parts() -> Iterator[pb.PushResultRequest | bytes]:
            yield pb.PushResultRequest(header=result)
            for data in payload.views(self._chunk_bytes):
                yield _RESULT_CHUNK(data)  # framed as bytes: see use_zero_copy_streams

        try:
            self._uplink.fleet.PushResult(parts(), timeout=self._rpc_timeout)
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                raise
            if err.code() in LINK_DOWN:
                self._uplink.mark(False)
            # The cloud dropped the site from the round or refused the reply; it said why.
            logger.warning(
                "the cloud did not take the site's reply to run %d round %d: %s: %s",
                header.run_id,
                header.server_round,
                err.code().name,
                err.details(),
            )
