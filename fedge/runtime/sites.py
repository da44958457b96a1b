"""Simulated site gateways: the ``local`` runtime's clients behind K sites, aggregated per site.

:class:`SiteGrid` wraps a :class:`~fedge.runtime.local.LocalGrid`: the messages to one site's
clients go through :func:`fedge.app.sites.run_site` (the code a real gateway runs, with its
local rounds, checks and clipping) and come back as the site's one reply, expanded for the
unchanged ServerApp exactly as the coordinator's grid expands a gateway's reply. Each round's
record gets the per-site facts (``sites`` in ``results.json``): devices asked and aggregated,
examples, the site's training loss and, without central DP, the test accuracy of the site's own
aggregate before the cloud averages it.
"""

from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import uuid4

from flwr.app import ArrayRecord, Message, MessageType
from flwr.serverapp import Grid

from fedge.app.sites import MEAN, SiteResult, aggregation_for, clip_norm_of, run_site
from fedge.runtime.base import RunGrid

__all__ = ["SiteGrid"]


class _LocalExchange:
    """A site's devices, reached in process."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def exchange(self, messages: list[Message], *, timeout: float) -> list[Message]:
        return list(self._grid.send_and_receive(messages, timeout=timeout))

    def missing_reason(self, node_id: int) -> str:
        return "no reply"


class SiteGrid(RunGrid):
    """``inner``'s nodes grouped into sites (``members``: node ids per site, ``site-1`` first)."""

    def __init__(
        self,
        inner: RunGrid,
        *,
        members: Sequence[Sequence[int]],
        run_config: dict[str, Any],
        site_rounds: int = 1,
        evaluate: Callable[[ArrayRecord], float] | None = None,
    ) -> None:
        super().__init__(inner.run.run_id)
        self._inner = inner
        self._exchange = _LocalExchange(inner)
        self._site_of = {
            int(node): f"site-{i + 1}" for i, nodes in enumerate(members) for node in nodes
        }
        self._run_config = run_config
        self._site_rounds = site_rounds
        self._evaluate = evaluate
        self._pending: dict[str, Message] = {}
        self._missing: dict[int, str] = {}
        self._round_sites: dict[int, list[dict[str, Any]]] = {}

    def get_node_ids(self) -> Iterable[int]:
        """Every simulated device (of every site)."""
        return self._inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue messages; their sites run when the replies are pulled."""
        ids = []
        for msg in messages:
            message_id = uuid4().hex
            msg.metadata.__dict__["_message_id"] = message_id
            self._pending[message_id] = msg
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Run each queued message's site and return the expanded replies."""
        messages = [self._pending.pop(i) for i in message_ids if i in self._pending]
        return self._run_sites(messages)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Run every site's share of ``messages`` now; one reply per contributing device."""
        return self._run_sites(list(messages), timeout=timeout)

    def missing_reason(self, node_id: int) -> str:
        """Why ``node_id`` sent no reply to the last messages."""
        return self._missing.get(node_id, "no reply")

    def node_name(self, node_id: int) -> str:
        """Simulated devices have no names."""
        return ""

    def round_facts(self, server_round: int) -> dict[str, Any]:
        """Per site, its share of the training exchange of ``server_round``."""
        sites = self._round_sites.get(server_round)
        return {"sites": sites} if sites else {}

    def _run_sites(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        groups: dict[str, list[Message]] = {}
        for msg in messages:
            groups.setdefault(self._site_of[int(msg.metadata.dst_node_id)], []).append(msg)
        self._missing = {}
        replies: list[Message] = []
        facts = []
        server_round = 0
        for site in sorted(groups, key=lambda s: int(s.split("-")[1])):
            group = groups[site]
            first = group[0]
            aggregation = aggregation_for(first.metadata.message_type, self._run_config)
            result = run_site(
                first,
                [int(m.metadata.dst_node_id) for m in group],
                self._exchange,
                aggregation=aggregation,
                clip_norm=clip_norm_of(self._run_config),
                site_rounds=self._site_rounds,
                timeout=timeout if timeout is not None else 3600.0,
            )
            by_node = {int(m.metadata.dst_node_id): m for m in group}
            replies.extend(result.expand(by_node))
            self._missing.update({n: f"{r} ({site})" for n, r in result.dropped.items()})
            config = first.content.config_records.get("config")
            value = config.get("server-round") if config is not None else None
            server_round = int(value) if isinstance(value, int) else 0
            facts.append({"site": site, "asked": len(group), **self._facts(result, aggregation)})
        if messages and messages[0].metadata.message_type == MessageType.TRAIN:
            self._round_sites[server_round] = facts
        return replies

    def _facts(self, result: SiteResult, aggregation: str) -> dict[str, Any]:
        facts = result.facts()
        if self._evaluate is not None and aggregation == MEAN and result.arrays is not None:
            facts["accuracy"] = self._evaluate(result.arrays)
        return facts
