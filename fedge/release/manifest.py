"""The release manifest: what a device needs to decide whether to trust and install a model.

Modelled on TUF targets metadata: the manifest names the artifact by length and SHA-256 and
carries a monotonic version and an expiry, so a device can refuse a tampered artifact, a replayed
or older manifest and a stale one. The signed bytes are a canonical JSON serialization (sorted
keys, no whitespace, ASCII), so signer and verifier hash exactly the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from fedge.release.errors import VerificationError

__all__ = [
    "MANIFEST_SCHEMA",
    "Manifest",
    "TensorSpec",
    "format_time",
    "parse_time",
]

MANIFEST_SCHEMA = 1


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

    def is_expired(self, *, now: datetime | None = None) -> bool:
        """Whether ``now`` (default: the current time) is past the expiry."""
        return (now or datetime.now(UTC)) >= parse_time(self.expires)
