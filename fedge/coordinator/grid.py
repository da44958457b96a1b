"""The coordinator's Flower ``Grid`` over fedge's fleet protocol (the ``grpc`` runtime).

``GrpcGrid`` turns each Flower ``Message`` into a task on the coordinator's
:class:`~fedge.coordinator.tasks.TaskHub`; enrolled devices pull tasks over gRPC, run the
ClientApp on their own data and push the replies back. The ServerApp's round loop
(:func:`fedge.app.server.run_federation`) runs on it unchanged.

A run's devices are known (the coordinator pins them when the run first starts). Before each
round the grid waits, up to ``wait_for_nodes`` seconds, for every one of them to be online,
saying whom it waits for; a device that is reconnecting counts. A round then collects replies
until every sampled device has answered, a device has gone silent, the round timeout passes or
the run is stopped; the grid can say why each missing reply is missing
(:class:`~fedge.app.server.ExplainsDrops`), and the round loop fails a round with too few usable
updates.
"""

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from uuid import uuid4

from flwr.app import Message

from fedge.coordinator.errors import RunStoppedError
from fedge.coordinator.tasks import Task, TaskHub
from fedge.errors import RoundFailedError
from fedge.log import logger
from fedge.protocol.messages import encode_message
from fedge.runtime.base import RunGrid

__all__ = ["GrpcGrid"]

_SERVER_NODE_ID = 0
_EVENT_EVERY = 15.0


class GrpcGrid(RunGrid):
    """A ``Grid`` whose nodes are the run's devices connected to this coordinator."""

    def __init__(
        self,
        hub: TaskHub,
        *,
        run_id: int,
        run_config: Mapping[str, object],
        nodes: Callable[[], Iterable[int]],
        min_replies: int = 1,
        wait_for_nodes: float = 60.0,
        stop: threading.Event | None = None,
        names: Callable[[int], str] | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self._hub = hub
        super().__init__(run_id)
        self._run_config_json = json.dumps(dict(run_config), sort_keys=True)
        self._nodes = nodes
        self._min_replies = min_replies
        self._wait_for_nodes = wait_for_nodes
        self._stop = stop or threading.Event()
        self._names = names or (lambda node: "")
        self._on_event = on_event or (lambda kind, message: None)
        self._pushed: dict[str, Task] = {}
        self._missing: dict[int, str] = {}
        self.server_round = 0

    def node_name(self, node_id: int) -> str:
        """The device id of ``node_id``."""
        return self._names(node_id)

    def missing_reason(self, node_id: int) -> str:
        """Why ``node_id`` sent no reply to the last messages."""
        return self._missing.get(node_id, "no reply")

    def get_node_ids(self) -> Iterable[int]:
        """The run's devices that are online, after waiting (bounded) for all of them."""
        expected = list(dict.fromkeys(self._nodes()))
        started = time.monotonic()
        deadline = started + self._wait_for_nodes
        said = 0.0
        while True:
            self._check_stop()
            online = self._hub.online(expected)
            now = time.monotonic()
            if len(online) >= len(expected) or now >= deadline:
                break
            if now - said >= _EVENT_EVERY:
                waiting = [self._label(n) for n in expected if n not in online]
                self._on_event(
                    "waiting",
                    f"waiting for {len(waiting)} of the run's {len(expected)} devices "
                    f"({', '.join(waiting)}), up to {self._wait_for_nodes:.0f}s",
                )
                said = now
            self._stop.wait(0.25)
        absent = [n for n in expected if n not in online]
        if len(online) < self._min_replies:
            raise RoundFailedError(
                f"only {len(online)} of the run's {len(expected)} devices connected within "
                f"{self._wait_for_nodes:.0f}s, need {self._min_replies}",
                drops=[
                    {"node_id": n, "device_id": self._names(n), "reason": "not connected"}
                    for n in absent
                ],
            )
        if absent:
            self._on_event(
                "proceeding",
                f"going on with {len(online)} of {len(expected)} devices; not connected after "
                f"{time.monotonic() - started:.0f}s: {', '.join(map(self._label, absent))}",
            )
        return online

    def _label(self, node_id: int) -> str:
        return self._names(node_id) or f"node {node_id}"

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue each message as a task for its device."""
        ids = []
        for msg in messages:
            message_id = uuid4().hex
            msg.metadata.__dict__["_message_id"] = message_id
            msg.metadata.__dict__["_src_node_id"] = _SERVER_NODE_ID
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            payload = encode_message(msg)
            server_round = _round_of(msg)
            self.server_round = server_round or self.server_round
            task = Task(
                task_id=message_id,
                node_id=int(msg.metadata.dst_node_id),
                run_id=self._run.run_id,
                server_round=self.server_round,
                message_type=msg.metadata.message_type,
                run_config_json=self._run_config_json,
                payload=payload,
                reference=msg.content.array_records.get("arrays") if msg.has_content() else None,
            )
            self._pushed[message_id] = task
            self._hub.push(task)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that have arrived for ``message_ids`` (waits for none)."""
        tasks = [self._pushed.pop(i) for i in message_ids if i in self._pushed]
        return list(self._hub.collect(tasks, deadline=0.0, stopped=lambda: True).values())

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send ``messages`` and collect replies (see the module docstring for when it stops)."""
        self._check_stop()
        messages = list(messages)
        ids = list(self.push_messages(messages))
        tasks = [self._pushed.pop(i) for i in ids]
        wait = timeout if timeout is not None else 3600.0
        results = self._hub.collect(
            tasks, deadline=time.monotonic() + wait, stopped=self._stop.is_set
        )
        self._check_stop()
        self._missing = {
            t.node_id: (
                f"no reply within the round timeout ({wait:.0f}s)"
                if self._hub.alive(t.node_id)
                else "went offline during the round"
            )
            for t in tasks
            if t.task_id not in results
        }
        if self._missing:
            logger.warning(
                "round %d: no %s reply from %s",
                self.server_round,
                _kind(messages),
                ", ".join(f"{self._label(n)} ({why})" for n, why in self._missing.items()),
            )
        return [results[t.task_id] for t in tasks if t.task_id in results]

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise RunStoppedError(f"run {self._run.run_id} was stopped")


def _round_of(msg: Message) -> int:
    config = msg.content.config_records.get("config") if msg.has_content() else None
    value = config.get("server-round") if config is not None else None
    return int(value) if isinstance(value, int) else 0


def _kind(messages: list[Message]) -> str:
    return messages[0].metadata.message_type if messages else "?"
