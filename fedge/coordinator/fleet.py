"""The cloud's side of the fleet endpoint: its fleet backend and its enrolment service.

The fleet and hub services are the one fleet endpoint's (:mod:`fedge.protocol.endpoint`);
:class:`CloudFleet` answers them from the cloud's device table and task hub. Authentication,
the error → status mapping and the record of refusals are the interceptor's
(:mod:`fedge.protocol.interceptor`). Nothing already stored is touched by a refused request.
"""

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from flwr.app import Message

from fedge.app.sites import SiteResult, aggregation_for
from fedge.app.validation import refuse_invalid_update
from fedge.coordinator.pki import CertificateAuthority
from fedge.coordinator.state import KIND_GATEWAY, DeviceRow, Heartbeat, State
from fedge.errors import PkiError
from fedge.protocol.manifest import key_id, load_public_key
from fedge.protocol.pki import certificate_serial
from fedge.protocol.serde import data_summary_from_proto, device_state_from_proto
from fedge.protocol.tasks import Task, TaskHub
from fedge.protocol.tokens import token_secret
from fedge.v1 import enrollment_pb2
from fedge.v1 import fleet_pb2 as pb

__all__ = [
    "CloudFleet",
    "EnrollmentServicer",
    "FleetSettings",
    "check_reply",
    "enroll",
    "heartbeat_of",
    "record_privacy",
]


@dataclass(frozen=True)
class FleetSettings:
    """What enrolment and the gateway service need besides state and tasks."""

    insecure: bool
    heartbeat_seconds: float
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
    settings: FleetSettings,
    gateway: DeviceRow | None = None,
) -> enrollment_pb2.EnrollResponse:
    """Consume the token, sign the device's CSR, record the device and an ``enrolled`` event;
    the response carries the release public key the device pins (over the channel it pinned
    through the token).

    ``gateway``: the site gateway that relayed the request (``None``: the cloud's own port). A
    gateway token makes a gateway: its certificate has the gateway role and its ``hosts``.
    """
    site = gateway.site if gateway is not None else None
    response = _register_device(
        request,
        state=state,
        ca=ca,
        days=settings.device_cert_days,
        release_key_pem=settings.release_key_pem,
        site=site,
    )
    if gateway is not None:
        note = f"enrolled at site {site} (gateway {gateway.device_id})"
    elif response.device_id.startswith("gw-"):
        note = f"enrolled as the gateway of site {response.site}"
    else:
        note = "enrolled"
    state.add_event("enrolled", f"{response.device_id} {note}", device_id=response.device_id)
    return response


def _register_device(
    request: enrollment_pb2.EnrollRequest,
    *,
    state: State,
    ca: CertificateAuthority | None,
    days: int,
    release_key_pem: bytes,
    site: str | None,
) -> enrollment_pb2.EnrollResponse:
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
        personal_version=request.personalization.version,
        personal_gain=request.personalization.gain,
        personal_reason=request.personalization.reason,
    )


def check_reply(reply: Message, task: Task) -> SiteResult | None:
    """Refuse (raise) a reply the cloud would not aggregate; a site's result, decoded."""
    if reply.has_error():  # the device reports a failure: a valid answer, not bad input
        return None
    if task.site_nodes:
        return SiteResult.from_content(
            reply.content,
            site_nodes=task.site_nodes,
            aggregation=aggregation_for(task.message_type, json.loads(task.run_config_json)),
            reference=task.reference,
        )
    refuse_invalid_update(reply, message_type=task.message_type, reference=task.reference)
    return None


def record_privacy(
    reply: Message, site: SiteResult | None, *, device: DeviceRow, state: State
) -> None:
    """Keep the privacy spent that an accepted reply (``site``: a site's) reports."""
    if site is None:
        records = reply.content.metric_records.values() if reply.has_content() else []
        _record_epsilon(records, device.device_id, state)
    else:  # a gateway's reply carries each of its devices' metrics
        for node, metrics in site.metrics.items():
            row = state.device_by_node(node)
            if row is not None:
                _record_epsilon([metrics], row.device_id, state)


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
        return enroll(request, state=self._state, ca=self._ca, settings=self._settings)


class CloudFleet:
    """The fleet backend of the cloud: its device table and its task hub."""

    def __init__(
        self, *, state: State, hub: TaskHub, release_state: Callable[[], str] = lambda: ""
    ) -> None:
        self._state = state
        self.hub = hub
        self.release_state = release_state

    def node_of(self, device: DeviceRow) -> int:
        """A device's node id is its row id."""
        return device.id

    def heartbeat(self, device: DeviceRow, request: pb.HeartbeatRequest) -> None:
        """Record what the device says of itself."""
        self._state.touch(
            device.device_id,
            state=device_state_from_proto(request.state),
            version=request.version,
            heartbeat=heartbeat_of(request),
        )

    def take_result(self, device: DeviceRow, task: Task, reply: Message) -> None:
        """Refuse an update of the wrong shape or a site's aggregate that does not add up;
        complete the task; record the privacy the device (each device of a site) spent."""
        site = check_reply(reply, task)
        self.hub.complete(task, reply)
        record_privacy(reply, site, device=device, state=self._state)
