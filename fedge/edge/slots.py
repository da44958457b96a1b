"""A/B model slots on the device, switched atomically (the RAUC/Mender pattern).

Layout under the device state directory::

    slots/a/model.onnx, slots/a/manifest.json     one release per slot
    slots/b/...
    slots.json                                    the pointer: which slot is active

The pointer is a small JSON file replaced by rename (after fsync of the file and followed by
fsync of the directory), so after a crash it names either the old or the new slot, never a mix.
A new model goes into the slot that is neither active nor the fallback, and becomes active in
*trial* mode: until it passes its health check and is committed, the previous slot stays the
one that serves and the one a restart falls back to.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fedge.errors import VerificationError
from fedge.files import atomic_write, file_sha256, fsync_dir
from fedge.protocol.manifest import Manifest, SignedManifest, verify_manifest

__all__ = [
    "HEAD_FILE",
    "MANIFEST_FILE",
    "MODEL_FILE",
    "POINTER_FILE",
    "SLOTS",
    "SlotState",
    "Slots",
]

SLOTS = ("a", "b")
#: The artifact in a slot, whatever its engine (ONNX, an OpenVINO IR zip, a LiteRT flatbuffer):
#: the manifest beside it says which.
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
#: A personalised slot's own last layer (fedge.edge.personalize), beside the release's model.
HEAD_FILE = "head.npz"
POINTER_FILE = "slots.json"


@dataclass(frozen=True)
class SlotState:
    """The pointer file's content."""

    active: str | None = None
    previous: str | None = None
    trial: bool = False
    # Install attempts per version interrupted in trial, and versions refused for good.
    attempts: dict[int, int] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)

    @property
    def serving(self) -> str | None:
        """The committed slot: the fallback while a new model is on trial."""
        return self.previous if self.trial else self.active

    def to_json(self) -> bytes:
        """Serialized pointer."""
        data: dict[str, Any] = {
            "active": self.active,
            "previous": self.previous,
            "trial": self.trial,
            "attempts": {str(k): v for k, v in self.attempts.items()},
            "rejected": {str(k): v for k, v in self.rejected.items()},
        }
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> SlotState:
        """Parse a pointer written by :meth:`to_json`."""
        data = json.loads(raw)
        return cls(
            active=data.get("active"),
            previous=data.get("previous"),
            trial=bool(data.get("trial", False)),
            attempts={int(k): int(v) for k, v in data.get("attempts", {}).items()},
            rejected={int(k): str(v) for k, v in data.get("rejected", {}).items()},
        )


class Slots:
    """The two model slots and the pointer of one device state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.pointer = self.state_dir / POINTER_FILE
        for slot in SLOTS:
            (self.state_dir / "slots" / slot).mkdir(parents=True, exist_ok=True)

    # -- pointer ---------------------------------------------------------------------------

    def state(self) -> SlotState:
        """The current pointer (an empty state before the first install)."""
        try:
            return SlotState.from_json(self.pointer.read_bytes())
        except FileNotFoundError:
            return SlotState()

    def write_state(self, state: SlotState) -> None:
        """Replace the pointer atomically."""
        atomic_write(self.pointer, state.to_json())

    def begin_trial(self, slot: str, *, version: int) -> SlotState:
        """Make ``slot`` active on trial; the currently serving slot becomes the fallback."""
        state = self.state()
        attempts = dict(state.attempts)
        attempts[version] = attempts.get(version, 0) + 1
        new = replace(state, active=slot, previous=state.serving, trial=True, attempts=attempts)
        self.write_state(new)
        return new

    def commit(self) -> SlotState:
        """The trial model passed its health check: it is now the committed model."""
        state = self.state()
        attempts = {k: v for k, v in state.attempts.items() if k != self.version_of(state.active)}
        new = replace(state, trial=False, attempts=attempts)
        self.write_state(new)
        return new

    def revert(self, *, reject: tuple[int, str] | None = None) -> SlotState:
        """Go back to the fallback slot; optionally refuse a version for good."""
        state = self.state()
        rejected = dict(state.rejected)
        if reject is not None:
            rejected[reject[0]] = reject[1]
        new = replace(state, active=state.serving, previous=None, trial=False, rejected=rejected)
        self.write_state(new)
        return new

    # -- slot content ----------------------------------------------------------------------

    def slot_dir(self, slot: str) -> Path:
        """Directory of a slot."""
        return self.state_dir / "slots" / slot

    def model_path(self, slot: str) -> Path:
        """The ONNX file of a slot."""
        return self.slot_dir(slot) / MODEL_FILE

    def writable_slot(self) -> str:
        """The slot a new model may be written to: neither serving nor on trial."""
        state = self.state()
        busy = {state.active, state.serving}
        free = [s for s in SLOTS if s not in busy]
        if not free:
            raise RuntimeError("both slots are in use: finish or recover the trial first")
        return free[0]

    def signed_manifest(self, slot: str) -> SignedManifest | None:
        """The signed manifest stored with a slot (None when the slot is empty or damaged)."""
        try:
            data = json.loads((self.slot_dir(slot) / MANIFEST_FILE).read_bytes())
            return SignedManifest(
                base64.b64decode(data["manifest"]),
                base64.b64decode(data["signature"]),
                str(data["key_id"]),
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def version_of(self, slot: str | None) -> int:
        """Release version in a slot (0 if none); unverified, for bookkeeping only."""
        if slot is None:
            return 0
        signed = self.signed_manifest(slot)
        if signed is None:
            return 0
        try:
            return signed.manifest.version
        except VerificationError:
            return 0

    def write_slot(self, slot: str, *, model: Path, signed: SignedManifest) -> None:
        """Move ``model`` into ``slot`` with its manifest; everything fsynced before return.

        The manifest is removed first and written last, so a slot interrupted half-way has no
        manifest and never verifies.
        """
        state = self.state()
        if slot in (state.active, state.serving):
            raise RuntimeError(f"refusing to overwrite slot {slot!r}: it is in use")
        target = self.slot_dir(slot)
        manifest_file = target / MANIFEST_FILE
        manifest_file.unlink(missing_ok=True)
        # A release replaces a personalised slot whole: its head was fitted to another model.
        (target / HEAD_FILE).unlink(missing_ok=True)
        fsync_dir(target)
        os.replace(model, target / MODEL_FILE)
        with open(target / MODEL_FILE, "rb") as handle:
            os.fsync(handle.fileno())
        payload = {
            "manifest": base64.b64encode(signed.manifest_json).decode(),
            "signature": base64.b64encode(signed.signature).decode(),
            "key_id": signed.key_id,
        }
        atomic_write(manifest_file, json.dumps(payload).encode())

    def verify_slot(self, slot: str, *, public_key: Ed25519PublicKey) -> Manifest:
        """Check a slot's manifest signature and that the model file matches it."""
        signed = self.signed_manifest(slot)
        if signed is None:
            raise VerificationError("malformed", f"slot {slot} has no manifest")
        manifest = verify_manifest(signed, public_key=public_key)
        path = self.model_path(slot)
        if not path.is_file() or path.stat().st_size != manifest.length:
            raise VerificationError("length", f"slot {slot} model length differs from manifest")
        if file_sha256(path) != manifest.sha256:
            raise VerificationError("sha256", f"slot {slot} model hash differs from manifest")
        return manifest

    def clear_slot(self, slot: str) -> None:
        """Empty a slot that is not in use."""
        shutil.rmtree(self.slot_dir(slot), ignore_errors=True)
        self.slot_dir(slot).mkdir(parents=True, exist_ok=True)
