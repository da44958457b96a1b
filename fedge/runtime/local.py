"""The ``local`` runtime: an in-process ``Grid`` that calls the ClientApp directly.

No actors, no serialization and no polling: ``send_and_receive`` runs the ClientApp for each
message in order, in this process, so a run is deterministic for a given seed. A ClientApp that
raises yields an error reply, as on the other runtimes.
"""

import os
import traceback
from collections.abc import Callable, Iterable
from typing import Any
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import ServerApp
from flwr.supercore.task_identity import TaskIdentity

from fedge.app.training import map_one_thread_each
from fedge.log import logger
from fedge.runtime.base import RunGrid

__all__ = ["BatchTrain", "LocalGrid", "run_local", "set_server_identity"]

_SERVER_NODE_ID = 0

#: Answers one exchange's messages (with their nodes' contexts) all at once, in order, or
#: returns ``None`` to leave them to the ClientApp (see :mod:`fedge.app.batched`).
BatchTrain = Callable[[list[Message], list[Context]], list[Message] | None]


class LocalGrid(RunGrid):
    """A ``Grid`` whose nodes are ClientApp calls in this process.

    Node ``i`` (id ``i + 1``) gets ``{"partition-id": i, "num-partitions": n}`` as node config,
    like a SuperNode of Flower's simulation engine. A node's context is made when it is first
    sent a message, so a population of 100,000 nodes costs only the nodes sampled.
    """

    def __init__(
        self,
        client_app: ClientApp,
        *,
        num_nodes: int,
        run_config: dict[str, Any] | None = None,
        run_id: int = 1,
        workers: int = 1,
        batch_train: BatchTrain | None = None,
    ) -> None:
        self._client_app = client_app
        self._batch_train = batch_train
        super().__init__(run_id)
        self._num_nodes = num_nodes
        self._run_config = dict(run_config or {})
        self._contexts: dict[int, Context] = {}
        self._pending: dict[str, Message] = {}
        self._workers = max(1, workers)

    def get_node_ids(self) -> Iterable[int]:
        """The ids of all nodes (``1..n``)."""
        return range(1, self._num_nodes + 1)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Queue messages; they run when their replies are pulled."""
        ids = []
        for msg in messages:
            if not 1 <= msg.metadata.dst_node_id <= self._num_nodes:
                raise ValueError(f"message to unknown node {msg.metadata.dst_node_id}")
            message_id = uuid4().hex
            msg.metadata.__dict__["_message_id"] = message_id
            msg.metadata.__dict__["_src_node_id"] = _SERVER_NODE_ID
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            self._pending[message_id] = msg
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Run the ClientApp for each queued message and return the replies."""
        queued = [self._pending.pop(i) for i in message_ids if i in self._pending]
        if self._batch_train is not None and len(queued) > 1:
            contexts = [self._context(msg.metadata.dst_node_id) for msg in queued]
            replies = self._batch_train(queued, contexts)
            if replies is not None:
                return replies
        # Small per-client batches use cores poorly within one op, so train clients side by
        # side on one thread each. Replies keep message order, so runs stay deterministic.
        return map_one_thread_each(self._call, queued, self._workers)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Run every message now, in order; ``timeout`` does not apply in-process."""
        return self.pull_messages(list(self.push_messages(messages)))

    def _context(self, node_id: int) -> Context:
        if node_id not in self._contexts:
            self._contexts[node_id] = Context(
                run_id=self._run.run_id,
                node_id=node_id,
                node_config={"partition-id": node_id - 1, "num-partitions": self._num_nodes},
                state=RecordDict(),
                run_config=self._run_config,
            )
        return self._contexts[node_id]

    def _call(self, msg: Message) -> Message:
        context = self._context(msg.metadata.dst_node_id)
        try:
            return self._client_app(msg, context)
        except Exception as err:  # a failing client must not stop the round
            logger.warning(
                "node %d raised %s: %s", msg.metadata.dst_node_id, type(err).__name__, err
            )
            logger.debug("%s", traceback.format_exc())
            reason = f"{type(err).__name__}: {err}"
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=msg)


def run_local(
    server_app: ServerApp,
    client_app: ClientApp,
    *,
    num_nodes: int,
    run_config: dict[str, Any] | None = None,
    workers: int | None = None,
    wrap: Callable[[LocalGrid], RunGrid] | None = None,
    batch_train: BatchTrain | None = None,
) -> None:
    """Run ``server_app`` against ``num_nodes`` in-process ClientApp nodes.

    ``workers`` clients train at once, each on one thread (default: one per CPU core).
    ``wrap`` puts a grid of its own around the nodes (simulated sites,
    :class:`~fedge.runtime.sites.SiteGrid`); ``batch_train`` trains each exchange's clients
    together where it can.
    """
    workers = workers if workers is not None else os.cpu_count() or 1
    local = LocalGrid(
        client_app,
        num_nodes=num_nodes,
        run_config=run_config,
        workers=workers,
        batch_train=batch_train,
    )
    grid: RunGrid = wrap(local) if wrap is not None else local
    set_server_identity(grid.run.run_id)
    context = Context(
        run_id=grid.run.run_id,
        node_id=_SERVER_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=dict(run_config or {}),
    )
    server_app(grid, context)


def set_server_identity(run_id: int) -> None:
    """Tell Flower's ``Message`` constructor which run and node this process serves."""
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = _SERVER_NODE_ID
    TaskIdentity.task_id = 0
