"""Device identity over mutual TLS: enrolment, unknown and revoked identities, roles."""

from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from fedge.coordinator.pki import CertificateAuthority, init_certs
from fedge.edge.identity import EnrollError, enroll_device
from fedge.errors import PkiError
from fedge.protocol.transport import ClientTLS
from fedge.v1 import control_pb2, fleet_pb2, fleet_pb2_grpc

from .conftest import Fleet


def _heartbeat(stub: fleet_pb2_grpc.FleetServiceStub) -> fleet_pb2.HeartbeatResponse:
    request = fleet_pb2.HeartbeatRequest(version="t", state=fleet_pb2.DEVICE_STATE_IDLE)
    return stub.Heartbeat(request, timeout=10)


def test_enrolled_device_gets_a_certificate_naming_it(fleet: Fleet) -> None:
    identity = fleet.enroll("clinic")
    cert = x509.load_pem_x509_certificate((Path(identity.state_dir) / "device.pem").read_bytes())
    assert cert.subject.rfc4514_string().startswith(f"CN={identity.device_id}")
    assert _heartbeat(fleet.fleet_stub(identity)).interval_seconds == 0.5
    device = fleet.coordinator.state.device(identity.device_id)
    assert device is not None and device.version == "t" and device.state == "idle"


def test_enrolment_token_is_single_use(fleet: Fleet) -> None:
    token = fleet.token()
    enroll_device(
        coordinator=fleet.address,
        token=token,
        state_dir=fleet.root / "a",
        enroll_address=fleet.enroll_address,
    )
    with pytest.raises(EnrollError, match=r"UNAUTHENTICATED.*already used"):
        enroll_device(
            coordinator=fleet.address,
            token=token,
            state_dir=fleet.root / "b",
            enroll_address=fleet.enroll_address,
        )
    assert len(fleet.coordinator.state.devices()) == 1


def test_token_pins_the_enrolment_certificate(fleet: Fleet) -> None:
    secret = fleet.token().split(".")[1]
    forged = f"fedge1.{secret}.{'0' * 64}"
    with pytest.raises(PkiError, match="does not match the token"):
        enroll_device(
            coordinator=fleet.address,
            token=forged,
            state_dir=fleet.root / "x",
            enroll_address=fleet.enroll_address,
        )
    assert fleet.coordinator.state.devices() == []


def test_certificate_from_another_ca_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    identity = fleet.enroll("real")
    init_certs(tmp_path / "rogue", hosts=("127.0.0.1",))
    rogue = CertificateAuthority(
        (tmp_path / "rogue/ca.pem").read_bytes(), (tmp_path / "rogue/ca.key").read_bytes()
    )
    key = ec.generate_private_key(ec.SECP256R1())
    from cryptography.hazmat.primitives import serialization

    tls = ClientTLS(
        ca_pem=(Path(identity.state_dir) / "ca.pem").read_bytes(),  # trusts the real server
        cert_pem=rogue.issue(key.public_key(), common_name=identity.device_id, role="device"),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    stub = fleet_pb2_grpc.FleetServiceStub(fleet.channel(tls))
    with pytest.raises(grpc.RpcError) as err:
        _heartbeat(stub)
    # The TLS handshake fails before any handler runs.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_unknown_device_with_a_valid_certificate_is_unauthenticated(fleet: Fleet) -> None:
    identity = fleet.enroll("real")
    certs = fleet.root / "certs"
    ca = CertificateAuthority((certs / "ca.pem").read_bytes(), (certs / "ca.key").read_bytes())
    key_pem = (Path(identity.state_dir) / "device.key").read_bytes()
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    tls = ClientTLS(
        ca_pem=ca.cert_pem,
        cert_pem=ca.issue(key.public_key(), common_name="dev-ghost", role="device"),
        key_pem=key_pem,
    )
    with pytest.raises(grpc.RpcError) as err:
        _heartbeat(fleet_pb2_grpc.FleetServiceStub(fleet.channel(tls)))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown device 'dev-ghost'" in (err.value.details() or "")


def test_revoked_device_is_refused_at_once(fleet: Fleet) -> None:
    identity = fleet.enroll("lost")
    stub = fleet.fleet_stub(identity)
    _heartbeat(stub)
    fleet.control_stub().RevokeDevice(
        control_pb2.RevokeDeviceRequest(device_id=identity.device_id), timeout=10
    )
    with pytest.raises(grpc.RpcError) as err:
        _heartbeat(stub)  # the same, still open connection
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    events = fleet.coordinator.state.events()
    assert any(e.kind == "revoked" for e in events)
    assert any("is revoked" in e.message for e in events if e.kind == "refused")


def test_roles_are_separate(fleet: Fleet) -> None:
    identity = fleet.enroll("dev")
    device_channel = fleet.channel(identity.tls())
    from fedge.v1 import control_pb2_grpc

    with pytest.raises(grpc.RpcError) as err:
        control_pb2_grpc.ControlServiceStub(device_channel).ListRuns(
            control_pb2.ListRunsRequest(), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    op = fleet.root / "certs" / "operator"
    operator = ClientTLS(
        ca_pem=(op / "ca.pem").read_bytes(),
        cert_pem=(op / "operator.pem").read_bytes(),
        key_pem=(op / "operator.key").read_bytes(),
    )
    with pytest.raises(grpc.RpcError) as err:
        _heartbeat(fleet_pb2_grpc.FleetServiceStub(fleet.channel(operator)))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_device_without_a_certificate_cannot_connect(fleet: Fleet) -> None:
    ca = (fleet.root / "certs" / "ca.pem").read_bytes()
    stub = fleet_pb2_grpc.FleetServiceStub(fleet.channel(ClientTLS(ca_pem=ca)))
    with pytest.raises(grpc.RpcError) as err:
        _heartbeat(stub)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
