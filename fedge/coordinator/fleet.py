"""The fleet and enrolment services (device ↔ coordinator): short delegations.

Authentication, the error → status mapping and the record of refusals are the interceptor's
(:mod:`fedge.protocol.interceptor`); a handler here reads the authenticated device with
:func:`~fedge.protocol.interceptor.caller` and delegates. Nothing already stored is touched by a
refused request.
"""

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from flwr.app import Message, MessageType

from fedge.app.validation import validate_train_replies
from fedge.coordinator.pki import CertificateAuthority
from fedge.coordinator.state import DeviceRow, Heartbeat, State
from fedge.coordinator.tasks import Task, TaskHub
from fedge.errors import PayloadError, StaleResultError
from fedge.protocol.interceptor import caller
from fedge.protocol.manifest import key_id, load_public_key
from fedge.protocol.messages import decode_message
from fedge.protocol.payload import PayloadAssembler
from fedge.protocol.pki import certificate_serial
from fedge.protocol.serde import data_summary_from_proto, device_state_from_proto
from fedge.protocol.tokens import token_secret
from fedge.protocol.wire import chunk_encoder
from fedge.v1 import enrollment_pb2
from fedge.v1 import fleet_pb2 as pb

__all__ = ["EnrollmentServicer", "FleetServicer", "FleetSettings", "accept_result", "enroll"]

_TASK_CHUNK = chunk_encoder(pb.PullTaskResponse)


@dataclass(frozen=True)
class FleetSettings:
    """What the fleet service needs besides state and tasks."""

    insecure: bool
    heartbeat_seconds: float
    chunk_bytes: int
    max_payload_bytes: int
    device_cert_days: int
    enroll_fingerprint: str = ""
    # The release public key (PEM) a device pins at enrolment; empty: the coordinator has none.
    release_key_pem: bytes = b""


def _release_key(pem: bytes) -> dict[str, Any]:
    """The enrol response's release-key fields (the device pins this key)."""
    if not pem:
        return {}
    return {"release_public_key_pem": pem, "release_key_id": key_id(load_public_key(pem=pem))}


def enroll(
    request: enrollment_pb2.EnrollRequest,
    *,
    state: State,
    ca: CertificateAuthority | None,
    days: int,
    release_key_pem: bytes = b"",
) -> enrollment_pb2.EnrollResponse:
    """Consume the token, sign the device's CSR and record the device; the response carries
    the release public key the device pins (over the channel it pinned through the token)."""
    secret = token_secret(request.token)
    device_id = f"dev-{secrets.token_hex(4)}"
    name = request.name.strip() or device_id
    release = _release_key(release_key_pem)
    if ca is None:  # insecure coordinator: identity is the device id alone
        row = state.enroll(secret=secret, name=name, cert_serial="", device_id=device_id)
        return enrollment_pb2.EnrollResponse(device_id=row.device_id, node_id=row.id, **release)
    cert_pem = ca.sign_csr(request.csr_pem.encode(), device_id=device_id, days=days)
    serial = certificate_serial(cert_pem)
    row = state.enroll(secret=secret, name=name, cert_serial=serial, device_id=device_id)
    state.touch(row.device_id, state="enrolled", version=request.version)
    return enrollment_pb2.EnrollResponse(
        device_id=row.device_id,
        node_id=row.id,
        certificate_pem=cert_pem.decode(),
        ca_certificate_pem=ca.cert_pem.decode(),
        **release,
    )


def accept_result(
    requests: Iterator[Any],
    *,
    device: DeviceRow,
    hub: TaskHub,
    state: State,
    max_bytes: int,
    require_sha256: bool = True,
) -> Task:
    """Reassemble, check and store one result stream; returns the task it answers.

    ``require_sha256``: refuse a payload without a hash (a connection without TLS).
    """
    first = next(requests, None)
    if first is None or first.WhichOneof("part") != "header":
        raise PayloadError("a result stream must start with a header")
    header = first.header
    task = hub.task_for_result(header.task_id, device.id)
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
    _check_reply(reply, task, device)
    hub.complete(task, reply)
    _record_epsilon(reply, device, state)
    return task


def _check_reply(reply: Message, task: Task, device: DeviceRow) -> None:
    meta = reply.metadata
    if meta.reply_to_message_id != task.task_id:
        raise StaleResultError(f"the reply answers message {meta.reply_to_message_id!r}")
    if int(meta.run_id) != task.run_id:
        raise StaleResultError(f"the reply is for run {meta.run_id}, not run {task.run_id}")
    # The device may not claim to be another node.
    meta.__dict__["_src_node_id"] = device.id
    if reply.has_error():  # the device reports a failure: a valid answer, not bad input
        return
    if task.message_type == MessageType.TRAIN and task.reference is not None:
        _, dropped = validate_train_replies([reply], task.reference)
        if dropped:
            raise PayloadError(f"update refused: {dropped[0].reason}")


def _record_epsilon(reply: Message, device: DeviceRow, state: State) -> None:
    if not reply.has_content():
        return
    for record in reply.content.metric_records.values():
        value = record.get("device-epsilon")
        if isinstance(value, int | float):
            state.set_privacy_spent(device.device_id, float(value))


class EnrollmentServicer:
    """gRPC handlers of ``fedge.v1.EnrollmentService`` (the enrolment port's only service)."""

    def __init__(self, *, state: State, settings: FleetSettings, ca: CertificateAuthority | None):
        self._state = state
        self._settings = settings
        self._ca = ca

    def Enroll(  # noqa: N802
        self, request: enrollment_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> enrollment_pb2.EnrollResponse:
        """Exchange a token and CSR for a device certificate."""
        response = enroll(
            request,
            state=self._state,
            ca=self._ca,
            days=self._settings.device_cert_days,
            release_key_pem=self._settings.release_key_pem,
        )
        self._state.add_event(
            "enrolled", f"{response.device_id} enrolled", device_id=response.device_id
        )
        return response


class FleetServicer:
    """gRPC handlers of ``fedge.v1.FleetService`` (an enrolled device on every call)."""

    def __init__(self, *, state: State, hub: TaskHub, settings: FleetSettings) -> None:
        self._state = state
        self._hub = hub
        self._settings = settings

    def Heartbeat(  # noqa: N802
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatResponse:
        """Record that the device is alive, and what it says of itself."""
        device: DeviceRow = caller(context)
        self._hub.seen(device.id)
        heartbeat = Heartbeat(
            can_train=request.can_train,
            profile=request.profile,
            release_version=request.release_version,
            release_slot=request.release_slot,
            data=data_summary_from_proto(request.data),
        )
        self._state.touch(
            device.device_id,
            state=device_state_from_proto(request.state),
            version=request.version,
            heartbeat=heartbeat,
        )
        return pb.HeartbeatResponse(interval_seconds=self._settings.heartbeat_seconds)

    def PullTask(  # noqa: N802
        self, request: pb.PullTaskRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """Stream the device's next task (header, then chunks), or nothing after the wait."""
        device: DeviceRow = caller(context)
        task = self._hub.pull(device.id, wait_seconds=request.wait_seconds)
        if task is None:
            return
        delivered = False
        try:
            yield pb.PullTaskResponse(header=_task_header(task, device, self._settings.insecure))
            for data in task.payload.views(self._settings.chunk_bytes):
                yield _TASK_CHUNK(data)
            delivered = True
        finally:
            if not delivered:  # the device went away mid-stream: give the task to it again
                self._hub.requeue(task)

    def PushResult(  # noqa: N802
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> pb.PushResultResponse:
        """Receive one task result (header, then chunks)."""
        device: DeviceRow = caller(context)
        accept_result(
            request_iterator,
            device=device,
            hub=self._hub,
            state=self._state,
            max_bytes=self._settings.max_payload_bytes,
            require_sha256=self._settings.insecure,
        )
        self._hub.seen(device.id)
        return pb.PushResultResponse(accepted=True)


def _task_header(task: Task, device: DeviceRow, insecure: bool) -> pb.TaskHeader:
    return pb.TaskHeader(
        task_id=task.task_id,
        run_id=task.run_id,
        server_round=task.server_round,
        message_type=task.message_type,
        run_config_json=task.run_config_json,
        node_id=device.id,
        payload_bytes=task.payload.total_bytes,
        # Mutual TLS authenticates every record: the hash is only needed without.
        payload_sha256=task.payload.sha256 if insecure else "",
        part_bytes=task.payload.part_bytes,
    )
