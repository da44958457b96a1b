"""Manifests, canonical bytes and Ed25519 signatures."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest

from fedge.edge.identity import pin_release_key
from fedge.errors import ReleaseError, VerificationError
from fedge.protocol.manifest import (
    Manifest,
    SignedManifest,
    TensorSpec,
    load_public_key,
    public_key_pem,
    verify_manifest,
)
from fedge.release.signing import generate_release_key, load_private_key, sign_manifest


def _manifest(**changes: object) -> Manifest:
    base = Manifest(
        name="digits",
        version=3,
        sha256="ab" * 32,
        length=1234,
        created="2026-01-01T00:00:00Z",
        expires="2099-01-01T00:00:00Z",
        profile="cpu-small",
        inputs=(TensorSpec("x", "float32", (-1, 16)),),
        outputs=(TensorSpec("logits", "float32", (-1, 4)),),
        labels=("a", "b", "c", "d"),
        report={"int8_accuracy": 0.93, "size_bytes": 1234},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_canonical_bytes_round_trip_and_are_stable() -> None:
    manifest = _manifest()
    raw = manifest.canonical_bytes()
    assert Manifest.from_bytes(raw) == manifest
    assert Manifest.from_bytes(raw).canonical_bytes() == raw
    assert b" " not in raw


def test_sign_and_verify(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "release.pem")
    signed = sign_manifest(_manifest(), key=key)
    assert verify_manifest(signed, public_key=key.public_key()) == _manifest()


def test_tampered_manifest_is_refused(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "release.pem")
    signed = sign_manifest(_manifest(), key=key)
    forged = _manifest(version=99).canonical_bytes()
    with pytest.raises(VerificationError) as err:
        verify_manifest(
            SignedManifest(forged, signed.signature, signed.key_id), public_key=key.public_key()
        )
    assert err.value.reason == "signature"


def test_signature_from_another_key_is_refused(tmp_path: Path) -> None:
    key = generate_release_key(path=tmp_path / "release.pem")
    attacker = generate_release_key(path=tmp_path / "attacker.pem")
    signed = sign_manifest(_manifest(), key=attacker)
    with pytest.raises(VerificationError, match="unknown key"):
        verify_manifest(signed, public_key=key.public_key())
    # Even claiming the right key id does not help.
    spoofed = SignedManifest(
        signed.manifest_json, signed.signature, sign_manifest(_manifest(), key=key).key_id
    )
    with pytest.raises(VerificationError, match="does not verify"):
        verify_manifest(spoofed, public_key=key.public_key())


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "release.pem"
    key = generate_release_key(path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(ReleaseError, match="already exists"):
        generate_release_key(path=path)
    loaded = load_private_key(path=path)
    assert public_key_pem(loaded.public_key()) == public_key_pem(key.public_key())
    assert (tmp_path / "keys" / "release.pem.pub").read_bytes() == public_key_pem(key.public_key())


def test_bad_key_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="does not exist"):
        load_private_key(path=tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(ReleaseError, match="not a PEM private key"):
        load_private_key(path=junk)
    with pytest.raises(VerificationError, match="not a PEM public key"):
        load_public_key(pem=b"garbage")


def test_pinning_refuses_a_different_key(tmp_path: Path) -> None:
    first = generate_release_key(path=tmp_path / "a.pem").public_key()
    second = generate_release_key(path=tmp_path / "b.pem").public_key()
    device = tmp_path / "device"
    pin_release_key(device, public_key_pem(first))
    pin_release_key(device, public_key_pem(first))  # idempotent
    with pytest.raises(VerificationError, match="different release key"):
        pin_release_key(device, public_key_pem(second))
    assert (device / "release_key.pub").read_bytes() == public_key_pem(first)
    pin_release_key(device, public_key_pem(second), replace=True)  # a new enrolment
    assert (device / "release_key.pub").read_bytes() == public_key_pem(second)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{", "cannot parse"),
        (b'{"schema": 2}', "unknown schema"),
        (_manifest().canonical_bytes().replace(b'"version":3', b'"version":0'), "version"),
        (_manifest().canonical_bytes().replace(b"2099-01-01T00:00:00Z", b"soon"), "timestamp"),
    ],
)
def test_malformed_manifests_are_refused(raw: bytes, match: str) -> None:
    with pytest.raises(VerificationError, match=match) as err:
        Manifest.from_bytes(raw)
    assert err.value.reason == "malformed"
