"""A simulated fleet on a simulated clock: devices come and go and train at their own speed.

:class:`SimulatedClockGrid` wraps the local runtime's :class:`~fedge.runtime.local.LocalGrid`.
Nothing sleeps: a training message runs at once (in this process, as before), and its reply is
*delivered* on the simulated clock at ``start + epochs · examples / speed`` of its device, or,
when the device is unreachable then, as soon as it is reachable again (it keeps its update
while offline). The clock jumps from event to event, so a run of hundreds of devices over hours
of simulated time costs only the training itself, and is deterministic for a seed.

- Synchronous rounds (the ``Grid`` API): a round samples among the devices reachable when it
  starts (it waits, on the clock, until ``--min-clients`` are), waits for every sampled device,
  and drops those that deliver after ``--round-timeout`` simulated seconds; its simulated time
  is its slowest delivered device's.
- Asynchronous aggregation (the :class:`~fedge.app.async_loop.DeviceClock` API): deliveries
  come one by one, in time order.
"""

import heapq
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import Message, MessageType

from fedge.app.availability import Availability
from fedge.runtime.base import RunGrid
from fedge.runtime.local import LocalGrid

__all__ = ["SimulatedClockGrid"]


class SimulatedClockGrid(RunGrid):
    """The local runtime's nodes on a simulated clock (node ``i + 1`` is device ``i``)."""

    def __init__(
        self,
        inner: LocalGrid,
        *,
        availability: Availability,
        speeds: np.ndarray,
        local_epochs: int,
        min_nodes: int = 1,
        round_timeout: float = math.inf,
    ) -> None:
        super().__init__(inner.run.run_id)
        self._inner = inner
        self._availability = availability
        self._speeds = speeds
        self._epochs = local_epochs
        self._min_nodes = min_nodes
        self._round_timeout = round_timeout
        self._nodes = sorted(inner.get_node_ids())
        self._now = 0.0
        self._round_ended = 0.0
        self._sequence = 0
        self._in_flight: list[tuple[float, int, Message]] = []
        self._missing: dict[int, str] = {}
        self._round: dict[str, Any] = {}

    # -- the clock, for the async loop ------------------------------------------------------

    @property
    def now(self) -> float:
        """Simulated seconds since the run began."""
        return self._now

    @property
    def training(self) -> int:
        """Trainings started whose replies are not delivered yet."""
        return len(self._in_flight)

    def devices(self) -> list[int]:
        """Every node, reachable or not."""
        return list(self._nodes)

    def reachable(self, node_ids: Sequence[int]) -> list[int]:
        """The members of ``node_ids`` reachable now."""
        on = set(self._availability.available_devices([n - 1 for n in node_ids], self._now))
        return [n for n in node_ids if n - 1 in on]

    def next_reachable(self, node_ids: Sequence[int]) -> float:
        """When the first of ``node_ids`` unreachable now becomes reachable (``inf``: never)."""
        off = [n for n in node_ids if not self._availability.available(n - 1, self._now)]
        return min(
            (self._availability.next_change(n - 1, self._now) for n in off), default=math.inf
        )

    def start_training(self, messages: Sequence[Message]) -> None:
        """Train now; each reply is delivered at its device's finishing (and reachable) time."""
        started = self._now
        for reply in self._inner.send_and_receive(messages):
            self._sequence += 1
            heapq.heappush(self._in_flight, (self._delivery(reply, started), self._sequence, reply))

    def wait(self, until: float) -> list[Message]:
        """Advance to the next delivery (returning its replies) or to ``until``."""
        if self._in_flight and self._in_flight[0][0] <= until:
            self._now = max(self._now, self._in_flight[0][0])
            delivered = []
            while self._in_flight and self._in_flight[0][0] <= self._now:
                delivered.append(heapq.heappop(self._in_flight)[2])
            return delivered
        if math.isfinite(until):
            self._now = max(self._now, until)
        return []

    # -- synchronous rounds (the Grid API) -------------------------------------------------

    def get_node_ids(self) -> Iterable[int]:
        """The nodes reachable now; the clock first runs until ``min_nodes`` are."""
        need = min(self._min_nodes, len(self._nodes))
        while len(reachable := self.reachable(self._nodes)) < need:
            later = self.next_reachable(self._nodes)
            if later == math.inf:
                break
            self._now = later
        return reachable

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue messages on the local runtime."""
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Replies of queued messages, with no simulated time (use ``send_and_receive``)."""
        return self._inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """A synchronous exchange: the clock waits for the slowest device, up to ``timeout``
        (default ``--round-timeout``) simulated seconds; later deliveries are dropped."""
        messages = list(messages)
        if not messages or messages[0].metadata.message_type != MessageType.TRAIN:
            return self._inner.send_and_receive(messages)  # evaluation takes no simulated time
        started = self._now
        deadline = started + (timeout if timeout is not None else self._round_timeout)
        self._missing = {}
        kept: list[Message] = []
        for reply in self._inner.send_and_receive(messages):
            node = int(reply.metadata.src_node_id)
            delivered = self._delivery(reply, started)
            if delivered <= deadline:
                kept.append(reply)
                self._now = max(self._now, delivered)
            else:
                self._missing[node] = (
                    f"no update within the round timeout ({deadline - started:.0f} simulated s): "
                    f"it would deliver after {delivered - started:.0f} s"
                )
        if self._missing:
            self._now = deadline
        self._round = {
            "sim_time": self._now,
            "sim_round_seconds": self._now - self._round_ended,
            "sim_waited_seconds": started - self._round_ended,
        }
        self._round_ended = self._now
        return kept

    def missing_reason(self, node_id: int) -> str:
        """Why ``node_id`` sent no reply in the last round."""
        return self._missing.get(node_id, "no reply")

    def node_name(self, node_id: int) -> str:
        """Simulated devices have no name beyond their node id."""
        return ""

    def round_facts(self, server_round: int) -> dict[str, Any]:
        """The simulated time of the round just trained."""
        return dict(self._round)

    def _delivery(self, reply: Message, started: float) -> float:
        """When ``reply`` reaches the server: after its training, once its device is online."""
        device = int(reply.metadata.src_node_id) - 1
        if reply.has_error():
            return started
        examples = 0.0
        for metrics in reply.content.metric_records.values():
            value = metrics.get("num-examples")
            if isinstance(value, int | float):
                examples = float(value)
        finished = started + self._epochs * examples / float(self._speeds[device])
        return self._availability.next_available(device, finished)
