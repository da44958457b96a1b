"""The fleet and enrolment services (device ↔ coordinator): short delegations.

Authentication, the error → status mapping and the record of refusals are the interceptor's
(:mod:`fedge.protocol.interceptor`); a handler here reads the authenticated device with
:func:`~fedge.protocol.interceptor.caller` and delegates. Nothing already stored is touched by a
refused request.
"""

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from flwr.app import Message, MessageType

from fedge.app.sites import SiteResult, aggregation_for
from fedge.app.validation import validate_train_replies
from fedge.coordinator.pki import CertificateAuthority
from fedge.coordinator.state import KIND_GATEWAY, DeviceRow, Heartbeat, State
from fedge.errors import PayloadError, PkiError
from fedge.protocol.fleet import pull_task, receive_result, send_task
from fedge.protocol.interceptor import caller
from fedge.protocol.manifest import key_id, load_public_key
from fedge.protocol.pki import certificate_serial
from fedge.protocol.serde import data_summary_from_proto, device_state_from_proto
from fedge.protocol.tasks import Task, TaskHub
from fedge.protocol.tokens import token_secret
from fedge.v1 import enrollment_pb2
from fedge.v1 import fleet_pb2 as pb

__all__ = [
    "EnrollmentServicer",
    "FleetServicer",
    "FleetSettings",
    "accept_result",
    "enroll",
    "heartbeat_of",
]


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
    site: str | None = None,
) -> enrollment_pb2.EnrollResponse:
    """Consume the token, sign the device's CSR and record the device; the response carries
    the release public key the device pins (over the channel it pinned through the token).

    ``site``: the site whose gateway relayed the request (``None``: the cloud's own port). A
    gateway token makes a gateway: its certificate has the gateway role and its ``hosts``.
    """
    secret = token_secret(request.token)
    kind, _ = state.token_kind(secret)
    gateway = kind == KIND_GATEWAY
    device_id = f"{'gw' if gateway else 'dev'}-{secrets.token_hex(4)}"
    name = request.name.strip() or device_id
    release = _release_key(release_key_pem)
    fingerprint = request.enroll_fingerprint if gateway else ""
    if gateway and not ca:
        raise PkiError("a site gateway needs TLS: this coordinator runs --insecure")
    if ca is None:  # insecure coordinator: identity is the device id alone
        row = state.enroll(secret=secret, name=name, cert_serial="", device_id=device_id, site=site)
        return enrollment_pb2.EnrollResponse(
            device_id=row.device_id, node_id=row.id, site=row.site, **release
        )
    hosts = tuple(h.strip() for h in request.hosts if h.strip()) if gateway else ()
    if gateway and not hosts:
        raise PkiError("a gateway's enrolment must name the hosts its devices reach it by")
    cert_pem = ca.sign_csr(
        request.csr_pem.encode(), device_id=device_id, days=days, gateway=gateway, hosts=hosts
    )
    serial = certificate_serial(cert_pem)
    row = state.enroll(
        secret=secret,
        name=name,
        cert_serial=serial,
        device_id=device_id,
        site=site,
        enroll_fingerprint=fingerprint,
    )
    state.touch(row.device_id, state="enrolled", version=request.version)
    return enrollment_pb2.EnrollResponse(
        device_id=row.device_id,
        node_id=row.id,
        certificate_pem=cert_pem.decode(),
        ca_certificate_pem=ca.cert_pem.decode(),
        site=row.site,
        **release,
    )


def heartbeat_of(request: pb.HeartbeatRequest) -> Heartbeat:
    """What a device's heartbeat says of it."""
    return Heartbeat(
        can_train=request.can_train,
        profile=request.profile,
        release_version=request.release_version,
        release_slot=request.release_slot,
        data=data_summary_from_proto(request.data),
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
    task, reply = receive_result(
        requests, hub=hub, node_id=device.id, max_bytes=max_bytes, require_sha256=require_sha256
    )
    site = _check_reply(reply, task)
    hub.complete(task, reply)
    if site is None:
        records = reply.content.metric_records.values() if reply.has_content() else []
        _record_epsilon(records, device.device_id, state)
    else:  # a gateway's reply carries each of its devices' metrics
        for node, metrics in site.metrics.items():
            row = state.device_by_node(node)
            if row is not None:
                _record_epsilon([metrics], row.device_id, state)
    return task


def _check_reply(reply: Message, task: Task) -> SiteResult | None:
    if reply.has_error():  # the device reports a failure: a valid answer, not bad input
        return None
    if task.site_nodes:
        return SiteResult.from_content(
            reply.content,
            site_nodes=task.site_nodes,
            aggregation=aggregation_for(task.message_type, json.loads(task.run_config_json)),
            reference=task.reference,
        )
    if task.message_type == MessageType.TRAIN and task.reference is not None:
        _, dropped = validate_train_replies([reply], task.reference)
        if dropped:
            raise PayloadError(f"update refused: {dropped[0].reason}")
    return None


def _record_epsilon(records: Any, device_id: str, state: State) -> None:
    for record in records:
        value = record.get("device-epsilon")
        if isinstance(value, int | float):
            state.set_privacy_spent(device_id, float(value))


class EnrollmentServicer:
    """gRPC handlers of ``fedge.v1.EnrollmentService`` (the enrolment port's only service)."""

    def __init__(self, *, state: State, settings: FleetSettings, ca: CertificateAuthority | None):
        self._state = state
        self._settings = settings
        self._ca = ca

    def Enroll(  # noqa: N802
        self, request: enrollment_pb2.EnrollRequest, context: grpc.ServicerContext
    ) -> enrollment_pb2.EnrollResponse:
        """Exchange a token and CSR for a device (or gateway) certificate."""
        response = enroll(
            request,
            state=self._state,
            ca=self._ca,
            days=self._settings.device_cert_days,
            release_key_pem=self._settings.release_key_pem,
        )
        what = f"gateway of site {response.site}" if response.device_id.startswith("gw-") else ""
        self._state.add_event(
            "enrolled",
            f"{response.device_id} enrolled" + (f" as the {what}" if what else ""),
            device_id=response.device_id,
        )
        return response


class FleetServicer:
    """gRPC handlers of ``fedge.v1.FleetService`` (an enrolled device or gateway on every call)."""

    def __init__(
        self,
        *,
        state: State,
        hub: TaskHub,
        settings: FleetSettings,
        release_state: Callable[[], str] = lambda: "",
    ) -> None:
        self._state = state
        self._hub = hub
        self._settings = settings
        self._release_state = release_state

    def Heartbeat(  # noqa: N802
        self, request: pb.HeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.HeartbeatResponse:
        """Record that the device is alive, and what it says of itself."""
        device: DeviceRow = caller(context)
        self._hub.seen(device.id)
        self._state.touch(
            device.device_id,
            state=device_state_from_proto(request.state),
            version=request.version,
            heartbeat=heartbeat_of(request),
        )
        return pb.HeartbeatResponse(
            interval_seconds=self._settings.heartbeat_seconds,
            release_state=self._release_state(),
        )

    def PullTask(  # noqa: N802
        self, request: pb.PullTaskRequest, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        """Stream the device's next task (header, then chunks), or nothing after the wait."""
        device: DeviceRow = caller(context)
        task = pull_task(self._hub, device.id, wait_seconds=request.wait_seconds, context=context)
        if task is None:
            return
        yield from send_task(
            task,
            self._hub,
            node_id=device.id,
            chunk_bytes=self._settings.chunk_bytes,
            insecure=self._settings.insecure,
        )

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
