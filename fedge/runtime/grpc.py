"""The ``grpc`` runtime: a Flower ``Grid`` over fedge's fleet protocol.

``GrpcGrid`` turns each Flower ``Message`` into a task on the coordinator's
:class:`~fedge.coordinator.tasks.TaskHub`; enrolled devices pull tasks over gRPC, run the
ClientApp on their own data and push the replies back. The ServerApp's round loop
(:func:`fedge.app.server.run_federation`) runs on it unchanged.

A round collects replies until every sampled device has answered, a device has gone silent,
the round timeout passes or the run is stopped. If fewer than ``min_replies`` training replies
arrived, :class:`~fedge.coordinator.errors.RoundFailedError` is raised so that the coordinator
can retry the round from the last checkpoint or fail the run, as configured.
"""

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from uuid import uuid4

from flwr.app import Message, MessageType

from fedge.coordinator.errors import RoundFailedError, RunStoppedError
from fedge.coordinator.serde import encode_message
from fedge.coordinator.tasks import Task, TaskHub
from fedge.log import logger
from fedge.runtime.base import RunGrid

__all__ = ["GrpcGrid"]

_SERVER_NODE_ID = 0


class GrpcGrid(RunGrid):
    """A ``Grid`` whose nodes are the enrolled devices connected to this coordinator."""

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
    ) -> None:
        self._hub = hub
        super().__init__(run_id)
        self._run_config_json = json.dumps(dict(run_config), sort_keys=True)
        self._nodes = nodes
        self._min_replies = min_replies
        self._wait_for_nodes = wait_for_nodes
        self._stop = stop or threading.Event()
        self._pushed: dict[str, Task] = {}
        self.server_round = 0

    def get_node_ids(self) -> Iterable[int]:
        """The connected devices; waits (bounded) until at least ``min_replies`` are."""
        deadline = time.monotonic() + self._wait_for_nodes
        while True:
            self._check_stop()
            online = self._hub.online(self._nodes())
            if len(online) >= self._min_replies or time.monotonic() >= deadline:
                if len(online) < self._min_replies:
                    raise RoundFailedError(
                        f"only {len(online)} devices connected after {self._wait_for_nodes:.0f}s,"
                        f" need {self._min_replies}"
                    )
                return online
            self._stop.wait(0.5)

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
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        results = self._hub.collect(tasks, deadline=deadline, stopped=self._stop.is_set)
        self._check_stop()
        replies = [results[t.task_id] for t in tasks if t.task_id in results]
        missing = [t.node_id for t in tasks if t.task_id not in results]
        if missing:
            logger.warning(
                "round %d: no %s reply from nodes %s", self.server_round, _kind(messages), missing
            )
        is_train = bool(messages) and messages[0].metadata.message_type == MessageType.TRAIN
        if is_train and len(replies) < min(self._min_replies, len(tasks)):
            raise RoundFailedError(
                f"round {self.server_round}: {len(replies)} of {len(tasks)} devices answered, "
                f"need {min(self._min_replies, len(tasks))}"
            )
        return replies

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise RunStoppedError(f"run {self._run.run_id} was stopped")


def _round_of(msg: Message) -> int:
    config = msg.content.config_records.get("config") if msg.has_content() else None
    value = config.get("server-round") if config is not None else None
    return int(value) if isinstance(value, int) else 0


def _kind(messages: list[Message]) -> str:
    return messages[0].metadata.message_type if messages else "?"
