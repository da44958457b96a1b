"""Site identities: devices enrol at their gateway, chain to the cloud's CA and are named, listed
and revoked by the cloud; a token is only good where it was made for; the gateway refuses a
device the cloud revoked."""

import json
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from fedge.cli.main import app
from fedge.edge.identity import EnrollError, enroll_device
from fedge.errors import FedgeError
from fedge.gateway.server import Gateway
from fedge.protocol.manifest import key_id, load_public_key
from fedge.protocol.pki import fingerprint
from fedge.protocol.tokens import make_token, parse_token
from fedge.protocol.transport import create_channel
from fedge.v1 import control_pb2 as pb
from fedge.v1 import fleet_pb2, fleet_pb2_grpc

from .conftest import SITE, Site, wait_for


def _issued_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    try:
        key.verify(
            cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm)
        )
    except Exception:
        return False
    return cert.issuer == ca.subject


def test_devices_enrol_at_their_gateway_with_certificates_of_the_cloud(site: Site) -> None:
    device = site.enroll("cam-0")
    state = Path(device.state_dir)
    cloud_ca = (site.root / "certs" / "ca.pem").read_bytes()
    assert (state / "ca.pem").read_bytes() == cloud_ca
    assert _issued_by((state / "device.pem").read_bytes(), cloud_ca)
    assert device.site == SITE and device.coordinator == site.address
    # the release key the device pinned is the cloud's own (the gateway cannot sign)
    assert (state / "release_key.pub").read_bytes() == site.fleet.coordinator.release_key_pem

    # the cloud names and lists it, behind its gateway; `fleet ls` shows the site
    rows = {
        d.device_id: d
        for d in site.fleet.control_stub().ListDevices(pb.ListDevicesRequest()).devices
    }
    assert rows[device.device_id].site == SITE and rows[device.device_id].kind == "device"
    gateway = rows[site.gateway.identity.device_id]  # type: ignore[union-attr]
    assert (gateway.kind, gateway.site) == ("gateway", SITE)
    runner = CliRunner()
    listed = runner.invoke(app, ["fleet", "ls", "--json", *site.fleet.operator_args])
    assert listed.exit_code == 0, listed.output
    shown = {d["device_id"]: d for d in json.loads(listed.output)}
    assert shown[device.device_id]["site"] == SITE and shown[gateway.device_id]["kind"] == "gateway"
    text = runner.invoke(app, ["fleet", "ls", *site.fleet.operator_args]).output
    assert f"site {SITE}: gateway {gateway.device_id}" in text
    assert f"  {device.device_id} cam-0" in text  # listed under its gateway
    # the cloud's event log says how each came: the gateway at the cloud, the device through it
    notes = {e.device_id: e.message for e in site.fleet.coordinator.state.events()}
    assert notes[gateway.device_id] == f"{gateway.device_id} enrolled as the gateway of site {SITE}"
    assert notes[device.device_id] == (
        f"{device.device_id} enrolled at site {SITE} (gateway {gateway.device_id})"
    )


def test_a_token_is_only_good_where_it_was_made_for(site: Site, tmp_path: Path) -> None:
    control = site.fleet.control_stub()
    site_token = parse_token(site.token())
    with pytest.raises(EnrollError, match="enrol at that site's gateway"):
        enroll_device(  # the site's secret at the cloud's own enrolment port
            coordinator=site.fleet.address,
            token=make_token(site_token.secret, _cloud_fingerprint(site)),
            state_dir=tmp_path / "wrong-port",
            enroll_address=site.fleet.enroll_address,
        )
    cloud_token = parse_token(control.CreateEnrollToken(pb.CreateEnrollTokenRequest()).token)
    with pytest.raises(EnrollError, match=f"not for site '{SITE}'"):
        enroll_device(  # a cloud device's secret at the gateway
            coordinator=site.address,
            token=make_token(cloud_token.secret, site_token.fingerprint),
            state_dir=tmp_path / "wrong-site",
            enroll_address=site.enroll_address,
        )
    assert not (tmp_path / "wrong-port").exists() and not (tmp_path / "wrong-site").exists()
    # a site without a gateway has no tokens, and a gateway token needs its site's name
    with pytest.raises(grpc.RpcError, match="has no gateway yet"):
        control.CreateEnrollToken(pb.CreateEnrollTokenRequest(site="nowhere"))
    with pytest.raises(grpc.RpcError, match="--site"):
        control.CreateEnrollToken(pb.CreateEnrollTokenRequest(site="a b", gateway=True))
    refused = CliRunner().invoke(
        app, ["fleet", "token", "create", "--gateway", *site.fleet.operator_args]
    )
    assert refused.exit_code == 2 and "--gateway needs --site" in refused.output


def test_a_site_token_pins_the_clouds_release_key(site: Site, tmp_path: Path) -> None:
    token = site.token()
    cloud_key = key_id(load_public_key(pem=site.fleet.coordinator.release_key_pem))
    assert parse_token(token).release_key_id == cloud_key
    # a gateway passing on a release key of its own is caught by the token's key id
    other = token.replace(cloud_key, "0" * 64)
    with pytest.raises(EnrollError, match="not the one the token names"):
        enroll_device(
            coordinator=site.address,
            token=other,
            state_dir=tmp_path / "fooled",
            enroll_address=site.enroll_address,
        )
    assert not (tmp_path / "fooled").exists()


def _cloud_fingerprint(site: Site) -> str:
    return fingerprint((site.root / "certs" / "enroll.pem").read_bytes())


def test_a_device_revoked_by_the_cloud_is_refused_at_its_gateway(site: Site) -> None:
    device = site.enroll("cam-1")
    channel = create_channel(site.address, tls=device.tls())
    stub = fleet_pb2_grpc.FleetServiceStub(channel)
    try:
        stub.Heartbeat(fleet_pb2.HeartbeatRequest(profile="cpu-small"), timeout=10)
        revoked = CliRunner().invoke(app, ["fleet", "revoke", "cam-1", *site.fleet.operator_args])
        assert revoked.exit_code == 0, revoked.output

        def refused() -> bool:
            try:
                stub.Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10)
            except grpc.RpcError as err:
                return err.code() == grpc.StatusCode.PERMISSION_DENIED and "revoked" in str(
                    err.details()
                )
            return False

        wait_for(refused, 10, "the gateway to refuse the revoked device")
    finally:
        channel.close()
    # and the cloud refuses what the gateway would still relay for it
    with pytest.raises(FedgeError, match="revoked"):
        site.gateway.releases.refresh(device.device_id, profile="cpu-small", installed_version=0)


def test_a_revoked_gateway_stops_with_the_clouds_reason(site: Site) -> None:
    gateway_id = site.gateway.identity.device_id  # type: ignore[union-attr]
    control = site.fleet.control_stub()
    control.RevokeDevice(pb.RevokeDeviceRequest(device_id=gateway_id), timeout=10)
    wait_for(lambda: site.gateway.fatal is not None, 15, "the gateway to be refused")
    assert site.gateway.wait() == site.gateway.fatal
    assert "the cloud refused this gateway: PERMISSION_DENIED" in str(site.gateway.fatal)
    assert "revoked" in str(site.gateway.fatal)


def test_a_restarted_gateway_needs_no_token_and_keeps_its_site(site: Site) -> None:
    device = site.enroll("cam-2")
    site.gateway.stop(grace=0.5)
    (site.root / "gateway" / "enroll.key").unlink()  # lost: a new one is made and reported
    again = Gateway(site.gateway.config)
    site.gateway = again
    again.start(coordinator=site.link.address)
    wait_for(lambda: again.uplink.online, 10, "the restarted gateway's sync")
    assert again.identity is not None and again.identity.site == SITE
    channel = create_channel(site.address, tls=device.tls())  # the roster was kept
    try:
        fleet_pb2_grpc.FleetServiceStub(channel).Heartbeat(fleet_pb2.HeartbeatRequest(), timeout=10)
    finally:
        channel.close()
    # site tokens now pin the new enrolment certificate
    new_cert = (site.root / "gateway" / "enroll.pem").read_bytes()
    wait_for(
        lambda: parse_token(site.token()).fingerprint == fingerprint(new_cert),
        10,
        "the cloud to learn the new enrolment certificate",
    )
