"""Who is calling: the device, gateway or operator identity of a gRPC call, for the interceptor.

With TLS on, gRPC has already verified the peer's certificate against the coordinator CA; here
the certificate's role and name are checked against the database, so a revoked device is
refused on its very next call. A site gateway is one enrolled identity (the gateway role): it
uses the fleet and hub services for its site, and the gateway service; a device behind it never
calls the cloud itself. With ``--insecure`` there is no identity to verify: the caller names
itself in metadata, which is only acceptable on a trusted test network.
"""

import datetime as dt
from dataclasses import dataclass

import grpc

from fedge.coordinator.state import DeviceRow, State
from fedge.errors import AuthenticationError, PermissionDeniedError, PkiError
from fedge.protocol.metadata import DEVICE_ID_METADATA
from fedge.protocol.pki import ROLE_DEVICE, ROLE_GATEWAY, ROLE_OPERATOR, peer_identity

__all__ = ["CoordinatorAuth", "Operator", "authenticate_device", "authenticate_operator"]


@dataclass(frozen=True)
class Operator:
    """An authenticated operator."""

    name: str


def _peer_cert(context: grpc.ServicerContext) -> bytes | None:
    certs = context.auth_context().get("x509_pem_cert")
    return certs[0] if certs else None


def authenticate_device(
    context: grpc.ServicerContext,
    state: State,
    *,
    insecure: bool,
    roles: tuple[str, ...] = (ROLE_DEVICE, ROLE_GATEWAY),
) -> DeviceRow:
    """The enrolled, unrevoked device (or gateway: ``roles``) making this call; raises
    otherwise."""
    pem = _peer_cert(context)
    if pem is None:
        if not insecure:
            raise AuthenticationError("no client certificate: enrol the device first")
        claimed = dict(context.invocation_metadata()).get(DEVICE_ID_METADATA, "")
        device = state.device(str(claimed))
        if device is None:
            raise AuthenticationError(f"unknown device {claimed!r}")
    else:
        try:
            identity = peer_identity(pem)
        except PkiError as err:
            raise AuthenticationError(str(err)) from err
        if identity.role not in roles:
            raise PermissionDeniedError(f"a {identity.role!r} certificate cannot use this API")
        if identity.not_after < dt.datetime.now(dt.UTC):
            raise AuthenticationError(f"the certificate of {identity.name} has expired")
        device = state.device(identity.name)
        if device is None:
            raise AuthenticationError(f"unknown device {identity.name!r}")
        if device.cert_serial != str(identity.serial):
            raise AuthenticationError(f"{identity.name} presented a superseded certificate")
        if (identity.role == ROLE_GATEWAY) != device.is_gateway:
            raise AuthenticationError(f"{identity.name}'s certificate has the wrong role")
    if device.revoked:
        raise PermissionDeniedError(f"device {device.device_id} is revoked")
    if ROLE_GATEWAY not in roles and device.is_gateway:
        raise PermissionDeniedError(f"{device.device_id} is a gateway: not allowed here")
    if ROLE_DEVICE not in roles and not device.is_gateway:
        raise PermissionDeniedError(f"{device.device_id} is not a gateway")
    if device.site and not device.is_gateway:
        # The gateway of its site speaks for it: its certificate is the gateway's to check.
        raise PermissionDeniedError(
            f"device {device.device_id} belongs to site {device.site!r}: it talks to its gateway"
        )
    return device


def authenticate_operator(context: grpc.ServicerContext, *, insecure: bool) -> Operator:
    """The operator; raises unless the caller holds an operator certificate."""
    pem = _peer_cert(context)
    if pem is None:
        if insecure:
            return Operator("operator (insecure)")
        raise AuthenticationError("the control API needs an operator certificate (--operator)")
    try:
        identity = peer_identity(pem)
    except PkiError as err:
        raise AuthenticationError(str(err)) from err
    if identity.role != ROLE_OPERATOR:
        raise PermissionDeniedError(f"a {identity.role!r} certificate cannot use the control API")
    if identity.not_after < dt.datetime.now(dt.UTC):
        raise AuthenticationError("the operator certificate has expired")
    return Operator(identity.name)


class CoordinatorAuth:
    """The coordinator's policy per service: devices and gateways on the fleet and hub
    services, gateways on the gateway service, the operator on the control service, anyone
    (with a token) on enrolment."""

    def __init__(self, state: State, *, insecure: bool) -> None:
        self._state = state
        self._insecure = insecure

    def __call__(self, method: str, context: grpc.ServicerContext) -> DeviceRow | Operator | None:
        """The caller of ``method`` (``Service/Method``), or a refusal."""
        service = method.partition("/")[0]
        if service in ("FleetService", "ModelHubService"):
            return authenticate_device(context, self._state, insecure=self._insecure)
        if service == "GatewayService":
            return authenticate_device(
                context, self._state, insecure=self._insecure, roles=(ROLE_GATEWAY,)
            )
        if service == "ControlService":
            return authenticate_operator(context, insecure=self._insecure)
        if service == "EnrollmentService":
            return None
        raise PermissionDeniedError(f"{method} is not served here")
