"""The coordinator's Flower ``Grid`` over fedge's fleet protocol (the ``grpc`` runtime).

``GrpcGrid`` turns each Flower ``Message`` into a task on the coordinator's
:class:`~fedge.protocol.tasks.TaskHub`; enrolled devices pull tasks over gRPC, run the
ClientApp on their own data and push the replies back. The ServerApp's round loop
(:func:`fedge.app.server.run_federation`) runs on it unchanged.

A run's devices are known (the coordinator pins them when the run first starts). Before each
round the grid waits, up to ``wait_for_nodes`` seconds, for every one of them to be online,
saying whom it waits for; a device that is reconnecting counts. A round then collects replies
until every sampled device has answered, a device has gone silent, the round timeout passes or
the run is stopped; the grid can say why each missing reply is missing
(:class:`~fedge.app.server.ExplainsDrops`), and the round loop fails a round with too few usable
updates.

Devices behind a site gateway are nodes of the run like any other: the strategy samples them
(Poisson-samples them, under central DP) and messages each. The hierarchy lives here: the
messages to one site's devices travel as ONE task to its gateway (naming the devices), the
gateway answers once for all of them (:mod:`fedge.app.sites`), and the grid expands that answer
into one reply per device that contributed (the site's aggregate with the device's own metrics)
and explains every device that did not. A site whose gateway cannot be reached when a round
starts (after the wait for the run's devices) is still asked, so its devices are dropped from
the round with that reason; the site rejoins the next round once its gateway is back. A gateway
that goes silent during a round (restarting, say) is waited for as long again before its site
is dropped: the pinned devices behind it are waited for as those connected directly are.
"""

import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

from flwr.app import Error, Message, MessageType
from flwr.common.constant import ErrorCode

from fedge.app.sites import SiteResult, aggregation_for
from fedge.coordinator.errors import RunStoppedError
from fedge.coordinator.gateways import SiteRef
from fedge.errors import PayloadError, RoundFailedError
from fedge.log import logger
from fedge.protocol.messages import encode_message
from fedge.protocol.tasks import Task, TaskHub
from fedge.runtime.base import RunGrid

__all__ = ["AsyncGrpcGrid", "GrpcGrid"]

_SERVER_NODE_ID = 0
_EVENT_EVERY = 15.0


@dataclass
class _SiteTask:
    """One task to a site gateway for several of its devices' messages."""

    site: SiteRef
    task: Task
    messages: dict[int, Message] = field(default_factory=dict)


class GrpcGrid(RunGrid):
    """A ``Grid`` whose nodes are the run's devices, connected to this coordinator directly or
    through their site's gateway."""

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
        sites: Callable[[list[int]], dict[int, SiteRef]] | None = None,
        online: Callable[[list[int]], list[int]] | None = None,
        unreachable: Callable[[SiteRef], str] | None = None,
    ) -> None:
        self._hub = hub
        super().__init__(run_id)
        self._run_config = dict(run_config)
        self._run_config_json = json.dumps(self._run_config, sort_keys=True)
        self._nodes = nodes
        self._min_replies = min_replies
        self._wait_for_nodes = wait_for_nodes
        self._stop = stop or threading.Event()
        self._names = names or (lambda node: "")
        self._on_event = on_event or (lambda kind, message: None)
        self._sites = sites or (lambda node_ids: {})
        self._online = online or hub.online
        self._unreachable = unreachable or (lambda site: f"site {site.site} is unreachable")
        self._pushed: dict[str, Task] = {}
        self._site_tasks: dict[str, _SiteTask] = {}
        self._missing: dict[int, str] = {}
        self._round_sites: dict[int, list[dict[str, Any]]] = {}
        # A strategy asks for the nodes more than once per exchange (Flower's FedAvg does twice):
        # wait for absent devices once per exchange, not each time.
        self._waited = False
        self.server_round = 0

    def node_name(self, node_id: int) -> str:
        """The device id of ``node_id``."""
        return self._names(node_id)

    def missing_reason(self, node_id: int) -> str:
        """Why ``node_id`` sent no reply to the last messages."""
        return self._missing.get(node_id, "no reply")

    def round_facts(self, server_round: int) -> dict[str, Any]:
        """Per site, what its gateway sent in the training exchange of ``server_round`` (only
        in a run with devices behind gateways)."""
        sites = self._round_sites.get(server_round)
        return {"sites": sites} if sites else {}

    def get_node_ids(self) -> Iterable[int]:
        """The run's devices that are online, after waiting (bounded) for all of them.

        Devices whose site gateway stayed unreachable are included: the round drops them
        with that reason (see the module docstring).
        """
        expected = list(dict.fromkeys(self._nodes()))
        started = time.monotonic()
        waited_before, self._waited = self._waited, True
        deadline = started + (0.0 if waited_before else self._wait_for_nodes)
        said = 0.0
        while True:
            self._check_stop()
            online = self._online(expected)
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
        sites = self._sites(absent)
        cut_off = [n for n in absent if n in sites and not self._hub.alive(sites[n].gateway_node)]
        if absent and not waited_before:
            self._on_event(
                "proceeding",
                f"going on with {len(online)} of {len(expected)} devices; not connected after "
                f"{time.monotonic() - started:.0f}s: {', '.join(map(self._label, absent))}"
                + (
                    "; asking the unreachable sites anyway, so they are dropped with why"
                    if cut_off
                    else ""
                ),
            )
        return [n for n in expected if n in online or n in cut_off]

    def _label(self, node_id: int) -> str:
        return self._names(node_id) or f"node {node_id}"

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue each message as a task for its device; the messages to one site's devices
        as one task for the site's gateway."""
        messages = list(messages)
        self._waited = False
        sites = self._sites([int(m.metadata.dst_node_id) for m in messages])
        grouped: dict[int, list[Message]] = {}
        ids = []
        for msg in messages:
            message_id = self._address(msg)
            ids.append(message_id)
            site = sites.get(int(msg.metadata.dst_node_id))
            if site is None:
                task = self._task(msg, node_id=int(msg.metadata.dst_node_id))
                self._pushed[message_id] = task
                self._hub.push(task)
            else:
                grouped.setdefault(site.gateway_node, []).append(msg)
        for group in grouped.values():
            site = sites[int(group[0].metadata.dst_node_id)]
            self._push_site(site, group)
        return ids

    def _address(self, msg: Message) -> str:
        message_id = uuid4().hex
        msg.metadata.__dict__["_message_id"] = message_id
        msg.metadata.__dict__["_src_node_id"] = _SERVER_NODE_ID
        msg.metadata.__dict__["_run_id"] = self._run.run_id
        server_round = _round_of(msg)
        self.server_round = server_round or self.server_round
        return message_id

    def _task(self, msg: Message, *, node_id: int, site_nodes: tuple[int, ...] = ()) -> Task:
        return Task(
            task_id=msg.metadata.message_id,
            node_id=node_id,
            run_id=self._run.run_id,
            server_round=self.server_round,
            message_type=msg.metadata.message_type,
            run_config_json=self._run_config_json,
            payload=encode_message(msg),
            reference=msg.content.array_records.get("arrays") if msg.has_content() else None,
            site_nodes=site_nodes,
        )

    def _push_site(self, site: SiteRef, group: list[Message]) -> None:
        pushed = self._site_task(site, group)
        for msg in group:
            self._pushed[msg.metadata.message_id] = pushed.task
        self._hub.push(pushed.task)

    def _site_task(
        self, site: SiteRef, group: list[Message], *, concurrent: bool = False
    ) -> _SiteTask:
        """One task to ``site``'s gateway for the messages of ``group`` (remembered, so its
        reply is expanded into one per device)."""
        first = group[0]
        for msg in group[1:]:
            # Flower's strategies give every sampled node the same content (one object).
            same = msg.content is first.content or msg.content == first.content
            if not same or msg.metadata.message_type != first.metadata.message_type:
                raise PayloadError(
                    "the strategy sent different messages to devices of one site; site "
                    "gateways aggregate one message per site (use fedavg, fedprox or fedadam)"
                )
        site_msg = Message(
            first.content,
            dst_node_id=site.gateway_node,
            message_type=first.metadata.message_type,
            group_id=first.metadata.group_id,
        )
        self._address(site_msg)
        nodes = tuple(int(m.metadata.dst_node_id) for m in group)
        task = self._task(site_msg, node_id=site.gateway_node, site_nodes=nodes)
        task.concurrent = concurrent
        pushed = _SiteTask(site, task, {int(m.metadata.dst_node_id): m for m in group})
        self._site_tasks[task.task_id] = pushed
        return pushed

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies that have arrived for ``message_ids`` (waits for none)."""
        return self._receive(list(message_ids), deadline=0.0, stopped=lambda: True, wait=0.0)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send ``messages`` and collect replies (see the module docstring for when it stops)."""
        self._check_stop()
        messages = list(messages)
        ids = list(self.push_messages(messages))
        wait = timeout if timeout is not None else 3600.0
        replies = self._receive(
            ids, deadline=time.monotonic() + wait, stopped=self._stop.is_set, wait=wait
        )
        self._check_stop()
        if self._missing:
            logger.warning(
                "round %d: no %s reply from %s",
                self.server_round,
                _kind(messages),
                ", ".join(f"{self._label(n)} ({why})" for n, why in self._missing.items()),
            )
        return replies

    def _receive(
        self, ids: list[str], *, deadline: float, stopped: Callable[[], bool], wait: float
    ) -> list[Message]:
        # A site's task answers several messages: collect each task once.
        unique = {t.task_id: t for t in (self._pushed.pop(i) for i in ids if i in self._pushed)}
        tasks = list(unique.values())
        # A site's gateway that goes silent (restarting, say) is waited for as long as a run
        # waits for its devices before a round: its devices are still there behind it.
        results = self._hub.collect(
            tasks,
            deadline=deadline,
            stopped=stopped,
            grace=lambda task: self._wait_for_nodes if task.site_nodes else 0.0,
        )
        replies: list[Message] = []
        self._missing = {}
        site_facts: list[dict[str, Any]] = []
        direct = [t for t in tasks if t.task_id not in self._site_tasks]
        for task in direct:
            if task.task_id in results:
                replies.append(results[task.task_id])
            else:
                self._missing[task.node_id] = self._why_missing(task.node_id, wait)
        for task in tasks:
            pushed = self._site_tasks.pop(task.task_id, None)
            if pushed is not None:
                replies.extend(self._expand(pushed, results.get(task.task_id), wait, site_facts))
        if tasks and tasks[0].message_type == MessageType.TRAIN and self._site_tasks_seen(tasks):
            site_facts.insert(0, _direct_facts(direct, results))
            self._round_sites[self.server_round] = [f for f in site_facts if f["asked"]]
        return replies

    def _site_tasks_seen(self, tasks: list[Task]) -> bool:
        return any(t.site_nodes for t in tasks)

    def _why_missing(self, node_id: int, wait: float) -> str:
        if self._hub.alive(node_id):
            return f"no reply within the round timeout ({wait:.0f}s)"
        return "went offline during the round"

    def _expand(
        self,
        pushed: _SiteTask,
        reply: Message | None,
        wait: float,
        facts: list[dict[str, Any]],
    ) -> list[Message]:
        site, task = pushed.site, pushed.task
        fact: dict[str, Any] = {
            "site": site.site,
            "gateway_id": site.gateway_id,
            "replies": int(reply is not None),
            "asked": len(pushed.messages),
            "aggregated": 0,
        }
        facts.append(fact)
        if reply is None:
            if self._hub.alive(site.gateway_node):
                why = f"site {site.site}: no reply from its gateway within {wait:.0f}s"
            else:
                why = self._unreachable(site)
            self._missing.update(dict.fromkeys(pushed.messages, why))
            return []
        if reply.has_error():
            why = f"site {site.site}: gateway error: {reply.error.reason}"
            self._missing.update(dict.fromkeys(pushed.messages, why))
            return []
        try:  # checked when it arrived; a bad one never reaches the hub
            result = SiteResult.from_content(
                reply.content,
                site_nodes=task.site_nodes,
                aggregation=aggregation_for(task.message_type, self._run_config),
                reference=task.reference,
            )
        except PayloadError as err:
            self._missing.update(dict.fromkeys(pushed.messages, f"site {site.site}: {err}"))
            return []
        for node in pushed.messages:
            if node not in result.metrics:
                why = result.dropped.get(node, "no reply")
                self._missing[node] = f"{why} (site {site.site})"
        fact.update(result.facts())
        return result.expand(pushed.messages)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise RunStoppedError(f"run {self._run.run_id} was stopped")


def _direct_facts(direct: list[Task], results: Mapping[str, Message]) -> dict[str, Any]:
    """The cloud's own devices as the site ""."""
    replied = [results[t.task_id] for t in direct if t.task_id in results]
    usable = [r for r in replied if not r.has_error() and r.has_content()]
    examples = 0
    for reply in usable:
        for record in reply.content.metric_records.values():
            value = record.get("num-examples")
            examples += int(value) if isinstance(value, int | float) else 0
    return {
        "site": "",
        "gateway_id": "",
        "replies": len(replied),
        "asked": len(direct),
        "aggregated": len(usable),
        "examples": examples,
    }


def _round_of(msg: Message) -> int:
    config = msg.content.config_records.get("config") if msg.has_content() else None
    value = config.get("server-round") if config is not None else None
    return int(value) if isinstance(value, int) else 0


def _kind(messages: list[Message]) -> str:
    return messages[0].metadata.message_type if messages else "?"


class AsyncGrpcGrid(GrpcGrid):
    """The run's devices as a :class:`~fedge.app.async_loop.DeviceClock` on the wall clock
    (``--mode async`` on a coordinator).

    A training task stays out until its device delivers, however long its link is cut: the
    device keeps its update and sends it when it can (:mod:`fedge.edge.trainer`), and the async
    loop weighs or refuses it by the version it started from (the reply's group). Only a task
    out longer than ``--round-timeout`` is withdrawn, and answered with an error reply saying so,
    so the loop frees its device.

    A device behind a site gateway gets its training as a task of its own to the gateway (one
    device, the message's version as its group), which the gateway holds beside its other
    devices' (``concurrent``) and forwards: the gateway keeps no buffer, so each update is
    weighed by the one cloud version it started from, and a device's participations are
    counted as a direct device's are. The gateway's reply (its site aggregate of that one
    device: the device's model, clipped to the run's norm under central DP) becomes the device's
    reply; a gateway that answers without it is the device's error reply, with its reason.
    """

    def __init__(
        self, hub: TaskHub, *, round_timeout: float, poll_seconds: float = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(hub, **kwargs)
        self._round_timeout = round_timeout
        self._poll = poll_seconds
        self._epoch = time.monotonic()
        self._out: dict[str, tuple[Task, Message]] = {}

    @property
    def now(self) -> float:
        """Seconds since the run's loop began."""
        return time.monotonic() - self._epoch

    @property
    def training(self) -> int:
        """Training tasks out, their updates not delivered yet."""
        return len(self._out)

    def devices(self) -> list[int]:
        """The run's devices, online or not."""
        return list(dict.fromkeys(self._nodes()))

    def reachable(self, node_ids: Sequence[int]) -> list[int]:
        """The devices of ``node_ids`` connected now."""
        return self._online(list(node_ids))

    def next_reachable(self, node_ids: Sequence[int]) -> float:
        """A device may reconnect any moment: look again shortly while one is away."""
        self._check_stop()
        away = set(node_ids) - set(self.reachable(node_ids))
        return self.now + self._poll if away else math.inf

    def start_training(self, messages: Sequence[Message]) -> None:
        """Queue a training task for each message's device."""
        self._check_stop()
        sites = self._sites([int(m.metadata.dst_node_id) for m in messages])
        for msg in messages:
            self._address(msg)
            site = sites.get(int(msg.metadata.dst_node_id))
            if site is None:
                task = self._task(msg, node_id=int(msg.metadata.dst_node_id))
            else:
                task = self._site_task(site, [msg], concurrent=True).task
            self._out[task.task_id] = (task, msg)
            self._hub.push(task)

    def wait(self, until: float) -> list[Message]:
        """The updates delivered by ``until`` (run seconds) or a task's timeout, whichever is
        first: none if nothing came, else every one there is."""
        self._check_stop()
        expiry = min(
            (t.created + self._round_timeout for t, _ in self._out.values()), default=math.inf
        )
        deadline = min(self._epoch + until, expiry)
        if not self._out:
            self._stop.wait(max(0.0, min(deadline, time.monotonic() + 60.0) - time.monotonic()))
            self._check_stop()
            return []
        tasks = [t for t, _ in self._out.values()]
        results = self._hub.first_results(tasks, deadline=deadline, stopped=self._stop.is_set)
        self._check_stop()
        replies = [self._device_reply(i, reply) for i, reply in results.items()]
        return replies + self._timed_out()

    def _device_reply(self, task_id: str, reply: Message) -> Message:
        """The device's reply to its training task: a forwarded one's from its gateway's."""
        task, msg = self._out.pop(task_id)
        forwarded = self._site_tasks.pop(task_id, None)
        if forwarded is None:
            return reply
        expanded = self._expand(forwarded, reply, self._round_timeout, [])
        if expanded:
            return expanded[0]
        why = self.missing_reason(task.site_nodes[0])
        return Message(Error(ErrorCode.UNKNOWN, why), reply_to=msg)

    def withdraw_all(self) -> None:
        """The run is over: a training still out will be refused when it delivers."""
        self._hub.withdraw(t for t, _ in self._out.values())
        self._out.clear()
        self._site_tasks.clear()

    def _timed_out(self) -> list[Message]:
        now = time.monotonic()
        late = [(t, m) for t, m in self._out.values() if now >= t.created + self._round_timeout]
        self._hub.withdraw(t for t, _ in late)
        replies = []
        for task, msg in late:
            del self._out[task.task_id]
            self._site_tasks.pop(task.task_id, None)
            why = f"no update within --round-timeout ({self._round_timeout:.0f}s)"
            self._missing[int(msg.metadata.dst_node_id)] = why
            replies.append(Message(Error(ErrorCode.UNKNOWN, why), reply_to=msg))
        return replies
