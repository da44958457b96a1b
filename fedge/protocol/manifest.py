"""Release manifests and their verification: what a device checks before it trusts a model.

Modelled on TUF targets metadata: the manifest names the artifact by length and SHA-256 and
carries a monotonic version and an expiry, so a device can refuse a tampered artifact, a replayed
or older manifest and a stale one. The signed bytes are a canonical JSON serialization (sorted
keys, no whitespace, ASCII), so signer and verifier hash exactly the same bytes. Signing is the
coordinator's (:mod:`fedge.release.signing`); verifying with the Ed25519 key a device pinned at
enrolment is shared, here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.errors import VerificationError

__all__ = [
    "FEATURES_OUTPUT",
    "MANIFEST_SCHEMA",
    "Manifest",
    "SignedManifest",
    "TensorSpec",
    "format_time",
    "key_id",
    "load_public_key",
    "parse_time",
    "public_key_pem",
    "verify_manifest",
]

MANIFEST_SCHEMA = 1
#: The second output of a release that can be personalised: the input of the model's last
#: linear layer, which a device fits its own last layer on.
FEATURES_OUTPUT = "features"


def format_time(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z`` suffix and whole seconds (stable across platforms)."""
    return moment.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse :func:`format_time` output; raise :class:`VerificationError` on anything else."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError) as exc:
        raise VerificationError("malformed", f"bad timestamp {text!r}") from exc


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input or output (-1 = dynamic dimension)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        """Build from the JSON form."""
        return cls(
            name=str(data["name"]),
            dtype=str(data["dtype"]),
            shape=tuple(int(d) for d in data["shape"]),
        )


@dataclass(frozen=True)
class Manifest:
    """A release: one model artifact at one monotonic version, for one device profile."""

    name: str
    version: int
    sha256: str
    length: int
    created: str
    expires: str
    profile: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...] = ()
    report: dict[str, Any] = field(default_factory=dict)
    rollback_of: int = 0
    schema: int = MANIFEST_SCHEMA

    def __post_init__(self) -> None:
        if self.version < 1:
            raise VerificationError("malformed", f"version must be >= 1, got {self.version}")
        if self.length < 1:
            raise VerificationError("malformed", f"length must be >= 1, got {self.length}")
        if len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256):
            raise VerificationError("malformed", f"sha256 must be 64 hex digits: {self.sha256!r}")
        parse_time(self.created)
        parse_time(self.expires)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (tuples become lists)."""
        data = asdict(self)
        data["inputs"] = [asdict(s) | {"shape": list(s.shape)} for s in self.inputs]
        data["outputs"] = [asdict(s) | {"shape": list(s.shape)} for s in self.outputs]
        data["labels"] = list(self.labels)
        return data

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed and verified."""
        return json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        """Parse canonical bytes; raise :class:`VerificationError` (``malformed``) if invalid."""
        try:
            data = json.loads(raw.decode("ascii"))
            if int(data.get("schema", 0)) != MANIFEST_SCHEMA:
                raise VerificationError("malformed", f"unknown schema {data.get('schema')!r}")
            return cls(
                name=str(data["name"]),
                version=int(data["version"]),
                sha256=str(data["sha256"]),
                length=int(data["length"]),
                created=str(data["created"]),
                expires=str(data["expires"]),
                profile=str(data["profile"]),
                inputs=tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
                outputs=tuple(TensorSpec.from_dict(s) for s in data["outputs"]),
                labels=tuple(str(x) for x in data.get("labels", [])),
                report=dict(data.get("report", {})),
                rollback_of=int(data.get("rollback_of", 0)),
            )
        except VerificationError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise VerificationError("malformed", f"cannot parse manifest: {exc}") from exc

    @property
    def engine(self) -> str:
        """The engine the artifact is for (``report["runtime"]``; ONNX Runtime by default)."""
        return str(self.report.get("runtime", "onnxruntime"))

    def is_expired(self, *, now: datetime | None = None) -> bool:
        """Whether ``now`` (default: the current time) is past the expiry."""
        return (now or datetime.now(UTC)) >= parse_time(self.expires)


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


def load_public_key(*, pem: bytes) -> Ed25519PublicKey:
    """Parse a PEM Ed25519 public key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise VerificationError("key", f"not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError("key", "the release key is not an Ed25519 key")
    return key


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
