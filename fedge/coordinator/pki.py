"""The coordinator's small PKI: a CA that issues server, operator and device certificates.

Device identity is the certificate: its common name is the device id and its organizational
unit the role (see :mod:`fedge.protocol.pki`, which reads them). Enrolment happens on a separate
TLS port whose self-signed certificate is pinned by the enrolment token (its SHA-256 travels in
the token), so a device trusts the coordinator before it has the CA (the same idea as kubeadm's
discovery hash).
"""

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedge.errors import PkiError
from fedge.files import atomic_write
from fedge.protocol.pki import (
    ROLE_DEVICE,
    ROLE_GATEWAY,
    ROLE_OPERATOR,
    build_certificate,
    make_enroll_certificate,
    subject_name,
)
from fedge.protocol.pki import key_pem as pem_of_key

__all__ = ["CertificateAuthority", "init_certs"]


class CertificateAuthority:
    """The coordinator CA: issues server, operator and device certificates."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert_pem = cert_pem
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError("the CA key is not an EC private key")
        self._key = key

    @classmethod
    def create(cls, *, days: int = 3650) -> "CertificateAuthority":
        """A new self-signed CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = subject_name("fedge coordinator CA", "ca")
        cert = build_certificate(name, key.public_key(), signer=key, days=days, ca=True)
        return cls(cert, pem_of_key(key))

    @property
    def key_pem(self) -> bytes:
        """The CA's private key, PEM."""
        return pem_of_key(self._key)

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        *,
        common_name: str,
        role: str,
        hosts: tuple[str, ...] = (),
        days: int = 365,
    ) -> bytes:
        """A certificate (PEM) for ``public_key``; ``hosts`` become server SANs."""
        return build_certificate(
            subject_name(common_name, role),
            public_key,
            signer=self._key,
            issuer=self.cert.subject,
            days=days,
            hosts=hosts,
        )

    def sign_csr(
        self,
        csr_pem: bytes,
        *,
        device_id: str,
        days: int,
        gateway: bool = False,
        hosts: tuple[str, ...] = (),
    ) -> bytes:
        """A device certificate for the key in ``csr_pem``; the CSR's own subject is ignored.

        A ``gateway``'s certificate has the gateway role and ``hosts`` as server names: it is
        the gateway's client certificate towards the cloud and its server certificate towards
        its site's devices, which verify it against the CA they got at enrolment.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as err:
            raise PkiError(f"the certificate signing request is not valid PEM: {err}") from err
        if not csr.is_signature_valid:
            raise PkiError("the certificate signing request's signature is invalid")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise PkiError("the CSR's key must be an EC key")
        if gateway:
            return self.issue(
                public_key, common_name=device_id, role=ROLE_GATEWAY, hosts=hosts, days=days
            )
        return self.issue(public_key, common_name=device_id, role=ROLE_DEVICE, days=days)


def init_certs(directory: Path, *, hosts: tuple[str, ...], force: bool = False) -> list[Path]:
    """Create the CA, server, enrolment and operator credentials in ``directory``.

    Layout: ``ca.pem``/``ca.key``, ``server.pem``/``server.key`` (SANs: ``hosts``),
    ``enroll.pem``/``enroll.key`` (self-signed, pinned by tokens), and ``operator/`` with the
    CA certificate and an operator certificate for ``fedge run``/``fedge fleet``.
    """
    if (directory / "ca.key").exists() and not force:
        raise PkiError(f"{directory / 'ca.key'} exists; pass --force to replace the whole PKI")
    ca = CertificateAuthority.create()
    server_key = ec.generate_private_key(ec.SECP256R1())
    operator_key = ec.generate_private_key(ec.SECP256R1())
    all_hosts = tuple(dict.fromkeys((*hosts, "localhost", "127.0.0.1")))
    enroll_cert, enroll_key = make_enroll_certificate(days=3650)
    files = {
        "ca.pem": ca.cert_pem,
        "ca.key": ca.key_pem,
        "server.pem": ca.issue(
            server_key.public_key(),
            common_name="fedge-coordinator",
            role="server",
            hosts=all_hosts,
            days=3650,
        ),
        "server.key": pem_of_key(server_key),
        "enroll.pem": enroll_cert,
        "enroll.key": enroll_key,
        "operator/ca.pem": ca.cert_pem,
        "operator/operator.pem": ca.issue(
            operator_key.public_key(), common_name="operator", role=ROLE_OPERATOR, days=3650
        ),
        "operator/operator.key": pem_of_key(operator_key),
    }
    written = []
    for rel, data in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode=0o600 if rel.endswith(".key") else None)
        written.append(path)
    return written
