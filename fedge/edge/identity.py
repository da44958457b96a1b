"""A device's identity: enrolment with a one-time token, and the key and certificate it keeps.

The state directory holds ``identity.json`` (device id, node id, coordinator address),
``device.key`` (never leaves the device), ``device.pem``, the coordinator's ``ca.pem`` and
``release_key.pub``: the coordinator's release public key, pinned from the enrolment reply (the
channel is authenticated by the token's certificate hash), which every release must be signed
with. Enrolment writes nothing until the coordinator has accepted the token, and an enrolled
state directory is never overwritten without ``force``: its key is the device's identity.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.errors import ConfigError, FedgeError, PkiError, VerificationError
from fedge.files import atomic_write
from fedge.protocol.manifest import key_id, load_public_key, public_key_pem
from fedge.protocol.tokens import parse_token, token_secret
from fedge.protocol.transport import ClientTLS, create_channel, parse_address
from fedge.v1 import enrollment_pb2, enrollment_pb2_grpc

__all__ = [
    "IDENTITY_FILE",
    "PINNED_KEY_FILE",
    "DeviceIdentity",
    "EnrollError",
    "enroll_device",
    "is_enrolled",
    "load_identity",
    "load_pinned_key",
    "pin_release_key",
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
    # The device profile it enrolled with: which release artifacts fit it.
    profile: str = ""
    # The site whose gateway it enrolled at ("" for a device of the cloud itself); a site
    # gateway's own identity names the site it serves.
    site: str = ""

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


def pin_release_key(state_dir: Path, pem: bytes, *, replace: bool = False) -> Ed25519PublicKey:
    """Pin the release key ``pem`` in ``state_dir`` (as enrolment does).

    A different key already pinned is refused unless ``replace`` (a new enrolment).
    """
    key = load_public_key(pem=pem)
    path = Path(state_dir) / PINNED_KEY_FILE
    if path.is_file() and not replace:
        pinned = load_public_key(pem=path.read_bytes())
        if key_id(pinned) != key_id(key):
            raise VerificationError("key", f"a different release key is already pinned at {path}")
        return pinned
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, public_key_pem(key))
    return key


def load_pinned_key(state_dir: Path) -> Ed25519PublicKey:
    """The release key pinned at enrolment; :class:`VerificationError` if there is none."""
    path = Path(state_dir) / PINNED_KEY_FILE
    if not path.is_file():
        raise VerificationError(
            "key",
            f"no release key pinned at {path}: this state directory was not enrolled with a "
            "release key; enrol it again (`fedge edge enroll --force` with a new token)",
        )
    return load_public_key(pem=path.read_bytes())


def _pinned_enroll_cert(host: str, port: int, expected: str, timeout: float) -> bytes:
    import ssl

    from fedge.protocol.pki import fingerprint

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
    profile: str = "",
    force: bool = False,
    timeout: float = 15.0,
    hosts: tuple[str, ...] = (),
    enroll_fingerprint: str = "",
) -> DeviceIdentity:
    """Enrol with ``token`` and save the device's key, certificate and identity.

    Nothing is written before the coordinator accepts the token; an enrolled ``state_dir`` is
    refused unless ``force`` (re-enrolling replaces the device's key and identity). A site
    gateway enrols the same way, naming the ``hosts`` its devices reach it by and its
    enrolment certificate's ``enroll_fingerprint``.
    """
    # Certificates (cryptography.x509) and ssl only here: a serving device never loads them.
    from fedge.protocol.pki import ENROLL_SERVER_NAME, make_key_and_csr

    host, port = parse_address(coordinator, option="--coordinator")
    enroll_host, enroll_port = parse_address(
        enroll_address or f"{host}:{port + 1}", option="--enroll-address"
    )
    if is_enrolled(state_dir) and not force:
        current = load_identity(state_dir)
        raise ConfigError(
            "--state",
            str(state_dir),
            f"is already enrolled as {current.device_id}; pass --force to replace its key and "
            "identity with a new enrolment",
        )
    tls: ClientTLS | None = None
    expected_key = ""
    if insecure:  # no pinning possible: the bare secret is sent
        secret = token_secret(token)
        key_pem, csr_pem = b"", b""
    else:
        parsed = parse_token(token)
        expected_key = parsed.release_key_id
        secret = token.strip()
        pinned = _pinned_enroll_cert(enroll_host, enroll_port, parsed.fingerprint, timeout)
        tls = ClientTLS(ca_pem=pinned, server_name=ENROLL_SERVER_NAME)
        key_pem, csr_pem = make_key_and_csr(name or "device")
    channel = create_channel(f"{enroll_host}:{enroll_port}", tls=tls)
    try:
        stub = enrollment_pb2_grpc.EnrollmentServiceStub(channel)
        request = enrollment_pb2.EnrollRequest(
            token=secret,
            csr_pem=csr_pem.decode(),
            name=name,
            version=version,
            profile=profile,
            hosts=list(hosts),
            enroll_fingerprint=enroll_fingerprint,
        )
        response = stub.Enroll(request, timeout=timeout)
    except grpc.RpcError as err:
        raise EnrollError(f"enrolment refused: {err.code().name}: {err.details()}") from err
    finally:
        channel.close()
    release_pem, release_key_id = _release_key(response, coordinator)
    if expected_key and release_key_id != expected_key:
        raise EnrollError(
            f"the release key {coordinator} passed on is not the one the token names: "
            "refusing a model signer other than the cloud's"
        )
    identity = DeviceIdentity(
        device_id=response.device_id,
        node_id=int(response.node_id),
        coordinator=coordinator,
        insecure=insecure,
        state_dir=str(state_dir.resolve()),
        release_key_id=release_key_id,
        profile=profile,
        site=response.site,
    )
    _save(state_dir, identity, key_pem, response, release_pem)
    return identity


def _save(
    state_dir: Path,
    identity: DeviceIdentity,
    key_pem: bytes,
    response: enrollment_pb2.EnrollResponse,
    release_pem: bytes,
) -> None:
    # The identity file is written last: a directory without it is not enrolled.
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / IDENTITY_FILE).unlink(missing_ok=True)
    if not identity.insecure:
        atomic_write(state_dir / "device.key", key_pem, mode=0o600)
        atomic_write(state_dir / "device.pem", response.certificate_pem.encode())
        atomic_write(state_dir / "ca.pem", response.ca_certificate_pem.encode())
    pin_release_key(state_dir, release_pem, replace=True)
    text = json.dumps(asdict(identity), indent=2) + "\n"
    atomic_write(state_dir / IDENTITY_FILE, text.encode())


def _release_key(response: enrollment_pb2.EnrollResponse, coordinator: str) -> tuple[bytes, str]:
    """The release key of the enrolment reply, checked against the key id it came with."""
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
