"""The fleet service (device ↔ coordinator): thin gRPC handlers over plain functions.

Each handler authenticates the device, delegates, and turns a :class:`~fedge.errors.FedgeError`
into a status code with the reason recorded as an event of the active run. Nothing already
stored is touched by a refused request.
"""

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from flwr.app import Message, MessageType

from fedge.app.validation import validate_train_replies
from fedge.coordinator.auth import authenticate_device
from fedge.coordinator.errors import PayloadError, StaleResultError, status_for
from fedge.coordinator.pki import CertificateAuthority
from fedge.coordinator.serde import PayloadAssembler, decode_message
from fedge.coordinator.state import DeviceRow, State, TokenError
from fedge.coordinator.tasks import Task, TaskHub
from fedge.errors import FedgeError
from fedge.log import logger
from fedge.net import Malformed, chunk_encoder
from fedge.v1 import fleet_pb2 as pb

__all__ = ["FleetServicer", "FleetSettings", "accept_result", "enroll", "parse_token"]

TOKEN_PREFIX = "fedge1"
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


def parse_token(token: str) -> str:
    """The secret in ``fedge1.<secret>.<enrol-cert sha256>`` (or a bare secret)."""
    parts = token.strip().split(".")
    if len(parts) == 3 and parts[0] == TOKEN_PREFIX:
        return parts[1]
    if len(parts) == 1 and parts[0]:
        return parts[0]
    raise TokenError("the enrolment token is malformed")


def make_token(secret: str, enroll_fingerprint: str) -> str:
    """The token string a device is given."""
    return f"{TOKEN_PREFIX}.{secret}.{enroll_fingerprint}"


def _release_key(pem: bytes) -> dict[str, Any]:
    """The enrol response's release-key fields (the device pins this key)."""
    if not pem:
        return {}
    from fedge.release import key_id, load_public_key

    return {"release_public_key_pem": pem, "release_key_id": key_id(load_public_key(pem=pem))}


def enroll(
    request: pb.EnrollRequest,
    *,
    state: State,
    ca: CertificateAuthority | None,
    days: int,
    release_key_pem: bytes = b"",
) -> pb.EnrollResponse:
    """Consume the token, sign the device's CSR and record the device; the response carries
    the release public key the device pins (over the channel it pinned through the token)."""
    secret = parse_token(request.token)
    device_id = f"dev-{secrets.token_hex(4)}"
    name = request.name.strip() or device_id
    release = _release_key(release_key_pem)
    if ca is None:  # insecure coordinator: identity is the device id alone
        row = state.enroll(secret=secret, name=name, cert_serial="", device_id=device_id)
        return pb.EnrollResponse(device_id=row.device_id, node_id=row.id, **release)
    cert_pem = ca.sign_csr(request.csr_pem.encode(), device_id=device_id, days=days)
    from cryptography import x509

    serial = str(x509.load_pem_x509_certificate(cert_pem).serial_number)
    row = state.enroll(secret=secret, name=name, cert_serial=serial, device_id=device_id)
    state.touch(row.device_id, state="enrolled", version=request.version)
    return pb.EnrollResponse(
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
    if isinstance(first, Malformed):
        raise PayloadError(first.reason)
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
        if isinstance(part, Malformed):
            raise PayloadError(part.reason)
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


class FleetServicer:
    """gRPC handlers of ``fedge.v1.FleetService``."""

    def __init__(
        self,
        *,
        state: State,
        hub: TaskHub,
        settings: FleetSettings,
        ca: CertificateAuthority | None,
        active_run: Callable[[], int | None],
        enroll_only: bool = False,
    ) -> None:
        self._state = state
        self._hub = hub
        self._settings = settings
        self._ca = ca
        self._active_run = active_run
        self._enroll_only = enroll_only

    def _refuse(
        self, context: grpc.ServicerContext, method: str, err: FedgeError, device: str = ""
    ) -> NoReturn:
        code = status_for(err)
        run_id = getattr(err, "run_id", None) or self._active_run()
        self._state.add_event(
            "refused", f"{method}: {code.name}: {err}", run_id=run_id, device_id=device
        )
        logger.warning("refused %s from %s: %s: %s", method, device or "?", code.name, err)
        context.abort(code, str(err))
        raise AssertionError("unreachable")  # context.abort raises

    def _device(self, context: grpc.ServicerContext, method: str) -> DeviceRow:
        if self._enroll_only:
            self._refuse(context, method, TokenError("this port serves enrolment only"))
        try:
            return authenticate_device(context, self._state, insecure=self._settings.insecure)
        except FedgeError as err:
            self._refuse(context, method, err)

    def Enroll(self, request: Any, context: grpc.ServicerContext) -> pb.EnrollResponse:  # noqa: N802
        """Exchange a token and CSR for a device certificate."""
        try:
            if isinstance(request, Malformed):
                raise PayloadError(request.reason)
            response = enroll(
                request,
                state=self._state,
                ca=self._ca,
                days=self._settings.device_cert_days,
                release_key_pem=self._settings.release_key_pem,
            )
        except FedgeError as err:
            self._refuse(context, "Enroll", err)
        self._state.add_event(
            "enrolled", f"{response.device_id} enrolled", device_id=response.device_id
        )
        return response

    def Heartbeat(self, request: Any, context: grpc.ServicerContext) -> pb.HeartbeatResponse:  # noqa: N802
        """Record that the device is alive."""
        device = self._device(context, "Heartbeat")
        if isinstance(request, Malformed):
            self._refuse(context, "Heartbeat", PayloadError(request.reason), device.device_id)
        self._hub.seen(device.id)
        state = pb.DeviceState.Name(request.state).removeprefix("DEVICE_STATE_").lower()
        self._state.touch(device.device_id, state=state, version=request.version)
        return pb.HeartbeatResponse(interval_seconds=self._settings.heartbeat_seconds)

    def PullTask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # noqa: N802
        """Stream the device's next task (header, then chunks), or nothing after the wait."""
        device = self._device(context, "PullTask")
        if isinstance(request, Malformed):
            self._refuse(context, "PullTask", PayloadError(request.reason), device.device_id)
        task = self._hub.pull(device.id, wait_seconds=request.wait_seconds)
        if task is None:
            return
        delivered = False
        try:
            yield pb.PullTaskResponse(
                header=pb.TaskHeader(
                    task_id=task.task_id,
                    run_id=task.run_id,
                    server_round=task.server_round,
                    message_type=task.message_type,
                    run_config_json=task.run_config_json,
                    node_id=device.id,
                    payload_bytes=task.payload.total_bytes,
                    # Mutual TLS authenticates every record: the hash is only needed without.
                    payload_sha256=task.payload.sha256 if self._settings.insecure else "",
                    part_bytes=task.payload.part_bytes,
                )
            )
            for data in task.payload.views(self._settings.chunk_bytes):
                yield _TASK_CHUNK(data)
            delivered = True
        finally:
            if not delivered:  # the device went away mid-stream: give the task to it again
                self._hub.requeue(task)

    def PushResult(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Receive one task result (header, then chunks)."""
        device = self._device(context, "PushResult")
        try:
            accept_result(
                request_iterator,
                device=device,
                hub=self._hub,
                state=self._state,
                max_bytes=self._settings.max_payload_bytes,
                require_sha256=self._settings.insecure,
            )
        except FedgeError as err:
            self._refuse(context, "PushResult", err, device.device_id)
        self._hub.seen(device.id)
        return pb.PushResultResponse(accepted=True)
