"""The task exchange of the fleet protocol that the coordinator, a site gateway and a device share.

Both serve ``FleetService`` to their devices from a :class:`~fedge.protocol.tasks.TaskHub`:
:func:`send_task` streams a pulled task (header, then its payload in chunks) and gives it back
to the hub if the stream breaks; :func:`receive_result` reassembles a pushed result, checks it
answers a task the hub issued to that very node, and decodes the Flower reply. What a server
then checks of the reply's content (the update's shapes, a site's aggregate) and records is its
own. :func:`read_task` and :func:`push_result` are the other side: a device's, and a gateway's
towards the cloud.
"""

from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from flwr.app import Message

from fedge.errors import PayloadError, StaleResultError
from fedge.protocol.messages import decode_message
from fedge.protocol.payload import EncodedMessage, PayloadAssembler
from fedge.protocol.tasks import Task, TaskHub
from fedge.protocol.wire import chunk_encoder
from fedge.records import copy_fields
from fedge.v1 import fleet_pb2 as pb

__all__ = [
    "pull_task",
    "push_result",
    "read_task",
    "receive_result",
    "result_header",
    "send_task",
    "task_header",
]

_TASK_CHUNK = chunk_encoder(pb.PullTaskResponse)
_RESULT_CHUNK = chunk_encoder(pb.PushResultRequest)


def task_header(task: Task, *, node_id: int, insecure: bool) -> pb.TaskHeader:
    """The header that announces ``task`` to node ``node_id``."""
    return copy_fields(
        pb.TaskHeader,
        task,
        node_id=node_id,
        payload_bytes=task.payload.total_bytes,
        # Mutual TLS authenticates every record: the hash is only needed without.
        payload_sha256=task.payload.sha256 if insecure else "",
        part_bytes=task.payload.part_bytes,
        site_nodes=list(task.site_nodes),
    )


def pull_task(
    hub: TaskHub, node_id: int, *, wait_seconds: float, context: grpc.ServicerContext
) -> Task | None:
    """``PullTask``'s wait for node ``node_id``'s next task, ended early if the call ends (a
    cut link): the node is not counted as seen past that moment."""
    context.add_callback(hub.notify)
    return hub.pull(node_id, wait_seconds=wait_seconds, cancelled=lambda: not context.is_active())


def send_task(
    task: Task, hub: TaskHub, *, node_id: int, chunk_bytes: int, insecure: bool
) -> Iterator[Any]:
    """``PullTask``'s stream for ``task``; the task goes back to ``hub`` if it breaks off."""
    delivered = False
    try:
        yield pb.PullTaskResponse(header=task_header(task, node_id=node_id, insecure=insecure))
        for data in task.payload.views(chunk_bytes):
            yield _TASK_CHUNK(data)
        delivered = True
    finally:
        if not delivered:  # the node went away mid-stream: give the task to it again
            hub.requeue(task)


def receive_result(
    requests: Iterator[Any],
    *,
    hub: TaskHub,
    node_id: int,
    max_bytes: int,
    require_sha256: bool,
) -> tuple[Task, Message]:
    """Reassemble one ``PushResult`` stream of node ``node_id``: its task and its reply.

    Refuses (:class:`~fedge.errors.StaleResultError`, :class:`~fedge.errors.PayloadError`) a
    result for a task the hub did not issue to this node, for another run or round, or that
    does not decode; ``require_sha256``: refuse a payload without a hash (no TLS). The reply's
    source is set to ``node_id``: a node may not claim to be another.
    """
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "header":
        raise PayloadError("a result stream must start with a header")
    header = first.header
    task = hub.task_for_result(header.task_id, node_id)
    if header.run_id != task.run_id or header.server_round != task.server_round:
        raise StaleResultError(
            f"result is for run {header.run_id} round {header.server_round}, the task is for "
            f"run {task.run_id} round {task.server_round}"
        )
    assembler = PayloadAssembler(
        expected_bytes=header.payload_bytes,
        part_bytes=header.part_bytes,
        sha256=header.payload_sha256,
        max_bytes=max_bytes,
        require_sha256=require_sha256,
    )
    for part in requests:
        if part.WhichOneof("part") != "chunk":
            raise PayloadError("a result stream has one header, then chunks")
        assembler.add(part.chunk.data)
    reply = decode_message(assembler.finish())
    meta = reply.metadata
    if meta.reply_to_message_id != task.task_id:
        raise StaleResultError(f"the reply answers message {meta.reply_to_message_id!r}")
    if int(meta.run_id) != task.run_id:
        raise StaleResultError(f"the reply is for run {meta.run_id}, not run {task.run_id}")
    meta.__dict__["_src_node_id"] = node_id
    return task, reply


def read_task(
    stream: Iterable[pb.PullTaskResponse], *, require_sha256: bool
) -> tuple[pb.TaskHeader, Message] | None:
    """The header and decoded message of a ``PullTask`` stream (``None``: no task came)."""
    header = None
    assembler = None
    for part in stream:
        if part.WhichOneof("part") == "header":
            header = part.header
            assembler = PayloadAssembler(
                expected_bytes=header.payload_bytes,
                part_bytes=header.part_bytes,
                sha256=header.payload_sha256,
                require_sha256=require_sha256,
            )
        elif assembler is not None:
            assembler.add(part.chunk.data)
    if header is None or assembler is None:
        return None
    return header, decode_message(assembler.finish())


def result_header(task: Any, payload: EncodedMessage, *, insecure: bool) -> pb.ResultHeader:
    """The header of the result ``payload`` answering the pulled task of header ``task``."""
    return pb.ResultHeader(
        task_id=task.task_id,
        run_id=task.run_id,
        server_round=task.server_round,
        payload_bytes=payload.total_bytes,
        # Mutual TLS authenticates every record: the hash is only needed without.
        payload_sha256=payload.sha256 if insecure else "",
        part_bytes=payload.part_bytes,
    )


def push_result(
    stub: Any,
    header: pb.ResultHeader,
    payload: EncodedMessage,
    *,
    chunk_bytes: int,
    timeout: float,
    metadata: tuple[tuple[str, str], ...] = (),
) -> None:
    """Stream one result to ``stub``'s ``PushResult``: its header, then its payload in chunks
    (raises ``grpc.RpcError`` as the call does)."""

    def parts() -> Iterator[pb.PushResultRequest | bytes]:
        yield pb.PushResultRequest(header=header)
        for data in payload.views(chunk_bytes):
            yield _RESULT_CHUNK(data)  # framed as bytes: see use_zero_copy_streams

    stub.PushResult(parts(), timeout=timeout, metadata=metadata)
