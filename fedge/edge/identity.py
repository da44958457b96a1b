"""A device's identity: enrolment with a one-time token, and the key and certificate it keeps.

The state directory holds ``identity.json`` (device id, node id, coordinator address),
``device.key`` (never leaves the device), ``device.pem``, the coordinator's ``ca.pem`` and
``release_key.pub``: the coordinator's release public key, pinned from the enrolment reply (the
channel is authenticated by the token's certificate hash), which every release must be signed
with.
"""

import json
import ssl
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from fedge.coordinator.pki import ENROLL_SERVER_NAME, PkiError, fingerprint, make_key_and_csr
from fedge.edge.slots import atomic_write
from fedge.errors import ConfigError, FedgeError
from fedge.net import ClientTLS, create_channel
from fedge.v1 import fleet_pb2, fleet_pb2_grpc

__all__ = [
    "IDENTITY_FILE",
    "PINNED_KEY_FILE",
    "DeviceIdentity",
    "EnrollError",
    "enroll_device",
    "is_enrolled",
    "load_identity",
    "split_address",
]

IDENTITY_FILE = "identity.json"
PINNED_KEY_FILE = "release_key.pub"


class EnrollError(FedgeError):
    """Enrolment failed: the coordinator refused the token, or could not be reached."""


@dataclass(frozen=True)
class DeviceIdentity:
    """Who this device is and where its coordinator is."""

    device_id: str
    node_id: int
    coordinator: str
    insecure: bool
    state_dir: str
    # Hex SHA-256 of the release public key pinned at enrolment (``release_key.pub``).
    release_key_id: str = ""

    def tls(self) -> ClientTLS | None:
        """Mutual-TLS credentials for the fleet port (``None`` when insecure)."""
        if self.insecure:
            return None
        root = Path(self.state_dir)
        return ClientTLS(
            ca_pem=(root / "ca.pem").read_bytes(),
            cert_pem=(root / "device.pem").read_bytes(),
            key_pem=(root / "device.key").read_bytes(),
        )


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` → ``(host, port)``; :class:`ConfigError` otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError("--coordinator", address, "must be HOST:PORT")
    return host.strip("[]"), int(port)


def is_enrolled(state_dir: Path) -> bool:
    """Whether ``state_dir`` holds a saved identity."""
    return (state_dir / IDENTITY_FILE).is_file()


def load_identity(state_dir: Path) -> DeviceIdentity:
    """The identity saved by :func:`enroll_device`."""
    path = state_dir / IDENTITY_FILE
    if not path.is_file():
        raise ConfigError(
            "--state",
            str(state_dir),
            "holds no identity: run `fedge edge enroll`, or give `fedge edge start` a --token",
        )
    try:
        return DeviceIdentity(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise ConfigError("--state", str(path), f"is not a device identity: {err}") from err


def _parse_token(token: str) -> tuple[str, str]:
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != "fedge1" or len(parts[2]) != 64:
        raise ConfigError("--token", token, "is not a fedge enrolment token (fedge1.SECRET.HASH)")
    return parts[1], parts[2]


def _pinned_enroll_cert(host: str, port: int, expected: str, timeout: float) -> bytes:
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout).encode()
    except OSError as err:
        raise EnrollError(f"cannot reach the enrolment port {host}:{port}: {err}") from err
    if fingerprint(pem) != expected:
        raise PkiError(
            f"the certificate at {host}:{port} does not match the token's hash: wrong coordinator"
            " or a man in the middle"
        )
    return pem


def enroll_device(
    *,
    coordinator: str,
    token: str,
    state_dir: Path,
    name: str = "",
    enroll_address: str | None = None,
    insecure: bool = False,
    version: str = "",
    timeout: float = 15.0,
) -> DeviceIdentity:
    """Enrol with ``token`` and save the device's key, certificate and identity."""
    host, port = split_address(coordinator)
    enroll_host, enroll_port = split_address(enroll_address or f"{host}:{port + 1}")
    state_dir.mkdir(parents=True, exist_ok=True)
    tls: ClientTLS | None = None
    if insecure:  # no pinning possible: the bare secret (or the token's secret part) is sent
        parts = token.strip().split(".")
        secret = parts[1] if len(parts) == 3 else token.strip()
        key_pem, csr_pem = b"", b""
    else:
        secret, expected = _parse_token(token)
        pinned = _pinned_enroll_cert(enroll_host, enroll_port, expected, timeout)
        tls = ClientTLS(ca_pem=pinned, server_name=ENROLL_SERVER_NAME)
        key_pem, csr_pem = make_key_and_csr(name or "device")
    channel = create_channel(f"{enroll_host}:{enroll_port}", tls=tls)
    try:
        stub = fleet_pb2_grpc.FleetServiceStub(channel)
        request = fleet_pb2.EnrollRequest(
            token=token.strip() if not insecure else secret,
            csr_pem=csr_pem.decode(),
            name=name,
            version=version,
        )
        response = stub.Enroll(request, timeout=timeout)
    except grpc.RpcError as err:
        raise EnrollError(f"enrolment refused: {err.code().name}: {err.details()}") from err
    finally:
        channel.close()
    release_pem, release_key_id = _release_key(response, coordinator)
    if not insecure:
        key_path = state_dir / "device.key"
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        (state_dir / "device.pem").write_text(response.certificate_pem)
        (state_dir / "ca.pem").write_text(response.ca_certificate_pem)
    identity = DeviceIdentity(
        device_id=response.device_id,
        node_id=int(response.node_id),
        coordinator=coordinator,
        insecure=insecure,
        state_dir=str(state_dir.resolve()),
        release_key_id=release_key_id,
    )
    # Re-enrolling a state directory replaces the pin: the token authenticated the new channel.
    atomic_write(state_dir / PINNED_KEY_FILE, release_pem)
    (state_dir / IDENTITY_FILE).write_text(json.dumps(asdict(identity), indent=2) + "\n")
    return identity


def _release_key(response: fleet_pb2.EnrollResponse, coordinator: str) -> tuple[bytes, str]:
    """The release key of the enrolment reply, checked against the key id it came with."""
    from fedge.release.signing import key_id, load_public_key, public_key_pem

    if not response.release_public_key_pem:
        raise EnrollError(
            f"the coordinator at {coordinator} sent no release key: upgrade it, then enrol "
            "again with a new token"
        )
    try:
        key = load_public_key(pem=bytes(response.release_public_key_pem))
    except FedgeError as err:
        raise EnrollError(f"the coordinator's release key is unusable: {err}") from err
    kid = key_id(key)
    if response.release_key_id and response.release_key_id != kid:
        raise EnrollError("the coordinator's release key does not match its key id")
    return public_key_pem(key), kid
