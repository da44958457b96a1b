"""Ed25519 release keys and manifest signatures (via ``cryptography``).

The release key is the coordinator's own signing key, separate from any TLS key: a stolen TLS
key lets an attacker impersonate the server but not ship a model a device will install. Devices
pin the public key at enrolment (trust on first use) and verify every manifest against it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedge.release.errors import ReleaseError, VerificationError
from fedge.release.manifest import Manifest

__all__ = [
    "SignedManifest",
    "generate_release_key",
    "key_id",
    "load_or_create_release_key",
    "load_private_key",
    "load_public_key",
    "pin_public_key",
    "public_key_pem",
    "sign_manifest",
    "verify_manifest",
]


@dataclass(frozen=True)
class SignedManifest:
    """The envelope a device receives: canonical manifest bytes, signature and key id."""

    manifest_json: bytes
    signature: bytes
    key_id: str

    @property
    def manifest(self) -> Manifest:
        """The parsed manifest (NOT verified: call :func:`verify_manifest` for trust)."""
        return Manifest.from_bytes(self.manifest_json)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Hex SHA-256 of the raw public key bytes (as TUF key ids)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> bytes:
    """PEM (SubjectPublicKeyInfo) bytes of a public key."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _write_private(path: Path, pem: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())


def generate_release_key(*, path: Path) -> Ed25519PrivateKey:
    """Create a new key at ``path`` (mode 0600) and ``path.pub``; refuse to overwrite one."""
    if path.exists():
        raise ReleaseError(f"release key {path} already exists; refusing to overwrite it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, pem)
    path.with_name(path.name + ".pub").write_bytes(public_key_pem(key.public_key()))
    return key


def load_private_key(*, path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key (PEM); a clear error if missing or not Ed25519."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ReleaseError(f"release key {path} does not exist") from exc
    except (ValueError, TypeError) as exc:
        raise ReleaseError(f"release key {path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ReleaseError(f"release key {path} is not an Ed25519 key")
    return key


def load_or_create_release_key(*, path: Path) -> Ed25519PrivateKey:
    """Load the key at ``path``, generating it first if it does not exist."""
    if path.exists():
        return load_private_key(path=path)
    return generate_release_key(path=path)


def load_public_key(*, pem: bytes) -> Ed25519PublicKey:
    """Parse a PEM Ed25519 public key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise VerificationError("key", f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError("key", "the release key is not an Ed25519 key")
    return key


def pin_public_key(*, path: Path, pem: bytes) -> Ed25519PublicKey:
    """Pin ``pem`` at ``path`` (trust on first use); refuse a different key once pinned."""
    key = load_public_key(pem=pem)
    if path.exists():
        pinned = load_public_key(pem=path.read_bytes())
        if key_id(pinned) != key_id(key):
            raise VerificationError("key", f"a different release key is already pinned at {path}")
        return pinned
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(public_key_pem(key))
    os.replace(tmp, path)
    return key


def sign_manifest(manifest: Manifest, *, key: Ed25519PrivateKey) -> SignedManifest:
    """Sign the canonical bytes of ``manifest``."""
    raw = manifest.canonical_bytes()
    return SignedManifest(raw, key.sign(raw), key_id(key.public_key()))


def verify_manifest(signed: SignedManifest, *, public_key: Ed25519PublicKey) -> Manifest:
    """Check the signature with the pinned key and return the parsed manifest.

    The signature is checked before the bytes are parsed, so an attacker cannot reach the
    parser with unsigned input.
    """
    if signed.key_id != key_id(public_key):
        raise VerificationError("signature", f"signed by unknown key {signed.key_id[:16]}")
    try:
        public_key.verify(signed.signature, signed.manifest_json)
    except InvalidSignature as exc:
        raise VerificationError("signature", "the manifest signature does not verify") from exc
    manifest = Manifest.from_bytes(signed.manifest_json)
    if manifest.canonical_bytes() != signed.manifest_json:
        raise VerificationError("malformed", "manifest bytes are not canonical")
    return manifest
