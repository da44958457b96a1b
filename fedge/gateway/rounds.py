"""A cloud round at a site gateway: pull the site's share, run it on the devices, answer once.

The cloud sends one task per site (its message, and the node ids of the site's devices it is
for). :class:`SiteRounds` queues the message for each of those devices on the gateway's own
task hub, collects their replies and aggregates them with :func:`fedge.app.sites.run_site`
(the checks the cloud makes, clipping under central DP, ``site-rounds`` local rounds), and
pushes the site's ONE reply upstream, well before the cloud's round timeout
(``round-margin-seconds``), so that devices that do not answer are dropped here with their
reason instead of costing the whole site its round.

In an asynchronous run the cloud forwards each of the site's devices its own training (one
device, tagged with the cloud's model version it starts from, a ``concurrent`` task): the
gateway runs each as it comes, beside the others, and keeps no buffer of its own, so each
update is weighed by the cloud against the one cloud version. Every reply is kept on disk
(:class:`~fedge.edge.outbox.PendingResult`, one per task) until the cloud takes or refuses it:
one the cut uplink could not carry is sent when the link returns, even after a restart.
"""

import json
import threading
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import grpc
from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from fedge.app.sites import aggregation_for, clip_norm_of, run_site
from fedge.edge.outbox import PendingResult
from fedge.errors import FedgeError
from fedge.gateway.uplink import LINK_DOWN, Uplink
from fedge.log import logger
from fedge.protocol.fleet import push_result, read_task, result_header
from fedge.protocol.messages import encode_message
from fedge.protocol.payload import EncodedMessage
from fedge.protocol.tasks import Task, TaskHub
from fedge.v1 import fleet_pb2 as pb

__all__ = ["SiteRounds"]

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
    """Serves the cloud's site tasks: a round's one at a time, an asynchronous run's forwarded
    trainings (``concurrent`` tasks) each in a thread of its own, as they come."""

    def __init__(
        self,
        *,
        uplink: Uplink,
        hub: TaskHub,
        margin_seconds: float,
        chunk_bytes: int,
        stop: threading.Event,
        results_dir: Path,
        rpc_timeout: float = 600.0,
    ) -> None:
        self._uplink = uplink
        self._hub = hub
        self._margin = margin_seconds
        self._chunk_bytes = chunk_bytes
        self._stop = stop
        self._results_dir = results_dir
        self._rpc_timeout = rpc_timeout
        self._lock = threading.Lock()
        # Replies a task's own thread is saving or sending (not for deliver_kept to send too).
        self._sending: set[str] = set()
        self.rounds_served = 0

    def serve_one(self, *, wait_seconds: float) -> bool:
        """Deliver the replies kept while the cloud was unreachable; then pull one site task
        (waiting up to ``wait_seconds``) and run it: a round's here, a concurrent one in a
        thread of its own."""
        self.deliver_kept()
        pulled = self._pull(wait_seconds)
        if pulled is None:
            return False
        header, message = pulled
        if header.concurrent:
            name = f"fedge-gw-task-{header.task_id[:8]}"
            threading.Thread(
                target=self._serve_quietly, args=(header, message), name=name, daemon=True
            ).start()
        else:
            self._serve(header, message)
        return True

    @property
    def serving(self) -> int:
        """Site tasks whose reply is being made or sent now."""
        with self._lock:
            return len(self._sending)

    def deliver_kept(self) -> int:
        """Send the kept replies (oldest first); how many the cloud took or refused. Raises
        ``grpc.RpcError`` while the cloud cannot be reached (the rest stay kept)."""
        kept_dirs = sorted(
            (p for p in self._results_dir.glob("*") if p.is_dir()),
            key=lambda p: p.stat().st_mtime,
        )
        sent = 0
        for path in kept_dirs:
            with self._lock:
                if path.name in self._sending:
                    continue
            kept = PendingResult(self._results_dir, path.name)
            loaded = kept.load()
            if loaded is None:
                kept.clear()  # torn by a crash: never whole, never sent
                continue
            header, payload = loaded
            logger.info(
                "delivering the site's kept reply to run %d round %d (task %s)",
                header.run_id,
                header.server_round,
                header.task_id,
            )
            self._deliver(kept, header, payload)
            sent += 1
        return sent

    def _serve(self, header: Any, message: Message) -> None:
        with self._lock:
            self._sending.add(header.task_id)
        try:
            reply = self._run(header, message)
            self._push(header, reply)
        finally:
            with self._lock:
                self._sending.discard(header.task_id)
                self.rounds_served += 1

    def _serve_quietly(self, header: Any, message: Message) -> None:
        """A concurrent task's thread: what goes wrong is logged (and a reply the cloud could
        not be sent is kept)."""
        try:
            self._serve(header, message)
        except grpc.RpcError as err:
            if err.code() in LINK_DOWN:
                self._uplink.mark(False)
            logger.warning(
                "run %d: the site's reply to task %s: %s: %s",
                header.run_id,
                header.task_id,
                err.code().name,
                err.details(),
            )
        except FedgeError as err:
            logger.warning("run %d: site task %s failed: %s", header.run_id, header.task_id, err)
        except ValueError:  # grpc: the gateway stopped and closed its uplink under the call
            if not self._stop.is_set():
                raise

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
        """Keep the reply on disk, then send it: a cut uplink loses nothing (see
        :meth:`deliver_kept`)."""
        payload = encode_message(reply)
        result = result_header(header, payload, insecure=False)
        kept = PendingResult(self._results_dir, header.task_id)
        kept.save(result, payload)
        try:
            self._deliver(kept, result, payload)
        except grpc.RpcError as err:
            if err.code() not in LINK_DOWN:
                raise
            self._uplink.mark(False)
            logger.warning(
                "the cloud is unreachable: the site's reply to run %d round %d is kept until "
                "it is back (%s)",
                header.run_id,
                header.server_round,
                err.code().name,
            )

    def _deliver(self, kept: PendingResult, header: Any, payload: EncodedMessage) -> None:
        kept.deliver(
            lambda: push_result(
                self._uplink.fleet,
                header,
                payload,
                chunk_bytes=self._chunk_bytes,
                timeout=self._rpc_timeout,
            )
        )
        self._uplink.mark(True)
