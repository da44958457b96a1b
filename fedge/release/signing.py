"""The coordinator's Ed25519 release key and manifest signatures (via ``cryptography``).

The release key is the coordinator's own signing key, separate from any TLS key: a stolen TLS
key lets an attacker impersonate the server but not ship a model a device will install. Devices
pin the public key at enrolment and verify every manifest against it
(:func:`fedge.protocol.manifest.verify_manifest`).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedge.errors import ReleaseError
from fedge.files import atomic_write
from fedge.protocol.manifest import Manifest, SignedManifest, key_id, public_key_pem

__all__ = [
    "generate_release_key",
    "load_or_create_release_key",
    "load_private_key",
    "sign_manifest",
]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, pem, mode=0o600)
    atomic_write(path.with_name(path.name + ".pub"), public_key_pem(key.public_key()))
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
    """Load the key at ``path``, generating it first if it does not exist (coordinator start)."""
    if path.exists():
        return load_private_key(path=path)
    return generate_release_key(path=path)


def sign_manifest(manifest: Manifest, *, key: Ed25519PrivateKey) -> SignedManifest:
    """Sign the canonical bytes of ``manifest``."""
    raw = manifest.canonical_bytes()
    return SignedManifest(raw, key.sign(raw), key_id(key.public_key()))
