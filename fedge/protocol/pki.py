"""The PKI both sides need: certificate fingerprints, device keys and CSRs, peer identities.

Device identity is the certificate: its common name is the device id and its organizational
unit the role (``device``, ``gateway`` or ``operator``). Every certificate is built by
:func:`build_certificate`; deciding whom to issue one is the coordinator's CA's
(:mod:`fedge.coordinator.pki`); reading them is shared.
"""

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedge.errors import PkiError

__all__ = [
    "ENROLL_SERVER_NAME",
    "ROLE_DEVICE",
    "ROLE_GATEWAY",
    "ROLE_OPERATOR",
    "PeerIdentity",
    "build_certificate",
    "cert_pem",
    "certificate_serial",
    "fingerprint",
    "key_pem",
    "make_enroll_certificate",
    "make_key_and_csr",
    "peer_identity",
    "subject_alt_names",
    "subject_name",
]

ROLE_DEVICE = "device"
ROLE_GATEWAY = "gateway"
ROLE_OPERATOR = "operator"
ENROLL_SERVER_NAME = "fedge-enroll"


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a mutual-TLS connection."""

    name: str
    role: str
    serial: int
    not_after: dt.datetime


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """A certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(pem: bytes) -> str:
    """SHA-256 of a certificate's DER encoding, hex."""
    cert = x509.load_pem_x509_certificate(pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def certificate_serial(pem: bytes) -> str:
    """A certificate's serial number, as decimal text."""
    return str(x509.load_pem_x509_certificate(pem).serial_number)


def make_key_and_csr(name: str) -> tuple[bytes, bytes]:
    """A new device key and a CSR for it (PEM); the coordinator picks the certificate's name."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def subject_alt_names(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    """The server names ``hosts`` (IP addresses or DNS names) as a certificate extension."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def subject_name(common_name: str, role: str) -> x509.Name:
    """A fedge certificate's subject: the name, and the role as organizational unit."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedge"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def build_certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    *,
    signer: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None = None,
    days: int,
    ca: bool = False,
    hosts: tuple[str, ...] = (),
) -> bytes:
    """Every fedge certificate (PEM): signed by ``signer`` as ``issuer`` (``None``: self-signed).

    ``ca``: a CA that signs leaf certificates only; ``hosts`` become server names (SANs).
    Valid from five minutes ago, so a peer whose clock is a little behind accepts it.
    """
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer or subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(_CA_KEY_USAGE, critical=True)
    if hosts:
        builder = builder.add_extension(subject_alt_names(hosts), critical=False)
    return cert_pem(builder.sign(signer, hashes.SHA256()))


def make_enroll_certificate(*, days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed certificate and key (PEM) for an enrolment port.

    Enrolment tokens pin it by its hash, so it needs no CA: the coordinator's enrolment port
    uses one, and so does each site gateway's.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = subject_name(ENROLL_SERVER_NAME, "enroll")
    cert = build_certificate(
        name, key.public_key(), signer=key, days=days, hosts=(ENROLL_SERVER_NAME,)
    )
    return cert, key_pem(key)


def peer_identity(pem: bytes) -> PeerIdentity:
    """The identity in a peer certificate that TLS has already verified against the CA."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise PkiError(f"peer certificate is not valid PEM: {err}") from err
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ou = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not cn or not ou:
        raise PkiError("peer certificate has no common name or organizational unit")
    return PeerIdentity(
        name=str(cn[0].value),
        role=str(ou[0].value),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
    )
