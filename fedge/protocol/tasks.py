"""The in-memory task hub between a round loop and the fleet service that serves it.

Both servers of the fleet protocol keep one: the coordinator (its ``GrpcGrid`` queues a task per
sampled device or site gateway) and a site gateway (which queues its site's share of a cloud
round for each of its devices). A node's ``PullTask`` takes the next task of its node;
``PushResult`` hands back the reply, which the round loop collects. The hub also knows which
nodes are alive (seen within ``liveness_seconds``), so a round does not wait for a node that has
gone away. Tasks are not persisted: after a restart the run resumes from its last checkpoint
and sends new tasks, and results for old tasks are refused.
"""

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, Message

from fedge.errors import DuplicateResultError, StaleResultError
from fedge.protocol.payload import EncodedMessage

__all__ = ["Task", "TaskHub"]

_REMEMBER_DONE = 10_000


@dataclass
class Task:
    """One message for one device, serialized."""

    task_id: str
    node_id: int
    run_id: int
    server_round: int
    message_type: str
    run_config_json: str
    payload: EncodedMessage
    reference: ArrayRecord | None = None  # the global model a training reply must match
    # For a site gateway: the devices of its site the task is for; the gateway answers once
    # for all of them (see fedge.app.sites).
    site_nodes: tuple[int, ...] = ()
    # A node may hold several such tasks at once (a site gateway forwarding its devices'
    # asynchronous trainings): pulling again does not give them back.
    concurrent: bool = False
    created: float = field(default_factory=time.monotonic)


class TaskHub:
    """Per-node task queues, delivered results and device liveness (thread-safe)."""

    def __init__(self, *, liveness_seconds: float = 15.0) -> None:
        self.liveness_seconds = liveness_seconds
        self._cond = threading.Condition()
        self._queues: dict[int, deque[Task]] = {}
        self._issued: dict[str, Task] = {}
        self._results: dict[str, Message] = {}
        # Recently answered task ids, so a duplicate is told apart from a stale result.
        self._done: OrderedDict[str, None] = OrderedDict()
        self._last_seen: dict[int, float] = {}
        self._pulling: dict[int, int] = {}
        # A node this process has not heard from yet (it restarted moments ago) counts as seen
        # at its start while collecting, so its nodes have time to reconnect.
        self._started = time.monotonic()

    # device side

    def seen(self, node_id: int) -> None:
        """Record that ``node_id`` is alive now."""
        with self._cond:
            self._last_seen[node_id] = time.monotonic()
            self._cond.notify_all()

    def forget(self, node_id: int) -> None:
        """Drop a node (revoked): its queued tasks are abandoned."""
        with self._cond:
            self._last_seen.pop(node_id, None)
            self._queues.pop(node_id, None)
            self._cond.notify_all()

    def pull(
        self,
        node_id: int,
        *,
        wait_seconds: float,
        cancelled: Callable[[], bool] | None = None,
    ) -> Task | None:
        """The next task for ``node_id``, waiting up to ``wait_seconds`` for one.

        ``cancelled`` (checked whenever the hub is woken, see :meth:`notify`) ends the wait
        early when the caller has gone, and the node then counts as seen when it last was, not
        now: a link that breaks mid-poll is noticed within ``liveness_seconds``.
        """
        deadline = time.monotonic() + max(0.0, min(wait_seconds, 60.0))
        gone = False
        with self._cond:
            # An agent works on one task at a time: a device asking for work has lost any task
            # it was given (e.g. it restarted, or its upload failed), so give those again.
            lost = [t for t in self._issued.values() if t.node_id == node_id and not t.concurrent]
            for task in lost:
                del self._issued[task.task_id]
                self._queues.setdefault(node_id, deque()).appendleft(task)
            self._pulling[node_id] = self._pulling.get(node_id, 0) + 1
            try:
                while True:
                    if cancelled is not None and cancelled():
                        gone = True
                        return None
                    self._last_seen[node_id] = time.monotonic()
                    queue = self._queues.get(node_id)
                    if queue:
                        task = queue.popleft()
                        self._issued[task.task_id] = task
                        return task
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    self._cond.wait(remaining)
            finally:
                self._pulling[node_id] -= 1
                if not gone:
                    self._last_seen[node_id] = time.monotonic()

    def requeue(self, task: Task) -> None:
        """Put back a task whose delivery failed (the device went away mid-stream)."""
        with self._cond:
            if task.task_id in self._issued and task.task_id not in self._done:
                del self._issued[task.task_id]
                self._queues.setdefault(task.node_id, deque()).appendleft(task)
                self._cond.notify_all()

    def task_for_result(self, task_id: str, node_id: int) -> Task:
        """The issued task a result claims to answer; :class:`StaleResultError` otherwise."""
        with self._cond:
            if task_id in self._done:
                raise DuplicateResultError(f"task {task_id} already has a result")
            task = self._issued.get(task_id)
            if task is None:
                raise StaleResultError(f"task {task_id!r} is unknown or no longer awaited")
            if task.node_id != node_id:
                raise StaleResultError(f"task {task_id} was not sent to this device")
            return task

    def complete(self, task: Task, reply: Message) -> None:
        """Store ``reply`` as the result of ``task`` (once)."""
        with self._cond:
            if task.task_id in self._done:
                raise DuplicateResultError(f"task {task.task_id} already has a result")
            if task.task_id not in self._issued:
                raise StaleResultError(f"task {task.task_id} is no longer awaited")
            self._done[task.task_id] = None
            while len(self._done) > _REMEMBER_DONE:
                self._done.popitem(last=False)
            del self._issued[task.task_id]
            self._results[task.task_id] = reply
            self._cond.notify_all()

    # grid side

    def alive(self, node_id: int) -> bool:
        """Whether ``node_id`` was seen within ``liveness_seconds`` (or is pulling now)."""
        with self._cond:
            return self._alive(node_id, time.monotonic())

    def online(self, candidates: Iterable[int]) -> list[int]:
        """The alive nodes among ``candidates``."""
        now = time.monotonic()
        with self._cond:
            return [n for n in candidates if self._alive(n, now)]

    def push(self, task: Task) -> None:
        """Queue ``task`` for its node."""
        with self._cond:
            self._queues.setdefault(task.node_id, deque()).append(task)
            self._cond.notify_all()

    def collect(
        self,
        tasks: list[Task],
        *,
        deadline: float,
        stopped: Callable[[], bool],
        grace: Callable[[Task], float] | None = None,
    ) -> dict[str, Message]:
        """Wait until every task has a result, its device is gone, the deadline or a stop.

        A device is gone when it has been silent for ``liveness_seconds`` plus its task's
        ``grace`` (seconds; none by default). Tasks without a result are withdrawn, so a late
        result is refused as stale.
        """
        pending = {t.task_id: t for t in tasks}
        results: dict[str, Message] = {}
        with self._cond:
            while True:
                for task_id in list(pending):
                    if task_id in self._results:
                        results[task_id] = self._results.pop(task_id)
                        del pending[task_id]
                now = time.monotonic()
                gone = [
                    t for t in pending.values() if self._gone(t.node_id, now, grace and grace(t))
                ]
                for task in gone:
                    del pending[task.task_id]
                if not pending or now >= deadline or stopped():
                    break
                self._cond.wait(min(0.5, deadline - now))
            for task in [*pending.values(), *gone]:
                self._withdraw(task)
        return results

    def first_results(
        self, tasks: list[Task], *, deadline: float, stopped: Callable[[], bool]
    ) -> dict[str, Message]:
        """Wait until one of ``tasks`` has a result, the deadline or a stop; every result
        there is then, by task id.

        Unlike :meth:`collect`, the tasks without a result stay issued: an asynchronous run
        takes an update whenever its device delivers it, even after a long cut link.
        """
        ids = [t.task_id for t in tasks]
        with self._cond:
            while True:
                results = {i: self._results.pop(i) for i in ids if i in self._results}
                now = time.monotonic()
                if results or now >= deadline or stopped():
                    return results
                self._cond.wait(min(0.5, deadline - now))

    def withdraw(self, tasks: Iterable[Task]) -> None:
        """Stop waiting for ``tasks``: a result that comes later is refused as stale."""
        with self._cond:
            for task in tasks:
                self._withdraw(task)
                self._results.pop(task.task_id, None)

    def notify(self) -> None:
        """Wake waiters (e.g. after a stop request)."""
        with self._cond:
            self._cond.notify_all()

    def _withdraw(self, task: Task) -> None:
        self._issued.pop(task.task_id, None)
        queue = self._queues.get(task.node_id)
        if queue and task in queue:
            queue.remove(task)

    def _gone(self, node_id: int, now: float, grace: float | None) -> bool:
        if self._pulling.get(node_id, 0) > 0:
            return False
        seen = self._last_seen.get(node_id, self._started)
        return now - seen > self.liveness_seconds + (grace or 0.0)

    def _alive(self, node_id: int, now: float) -> bool:
        if self._pulling.get(node_id, 0) > 0:
            return True
        seen = self._last_seen.get(node_id)
        return seen is not None and now - seen <= self.liveness_seconds
