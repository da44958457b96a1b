"""Signed model releases: manifests, Ed25519 signing, the release store and staged rollout."""

from fedge.release.errors import (
    ArtifactNotFoundError,
    ReleaseError,
    ReleaseNotFoundError,
    VerificationError,
)
from fedge.release.manifest import Manifest, TensorSpec, format_time, parse_time
from fedge.release.onnx_info import describe_onnx
from fedge.release.rollout import bucket_of, select_release
from fedge.release.signing import (
    SignedManifest,
    generate_release_key,
    key_id,
    load_or_create_release_key,
    load_private_key,
    load_public_key,
    pin_public_key,
    public_key_pem,
    sign_manifest,
    verify_manifest,
)
from fedge.release.store import INSTALL_STATES, ReleaseInfo, ReleaseStore, db_url_for

__all__ = [
    "INSTALL_STATES",
    "ArtifactNotFoundError",
    "Manifest",
    "ReleaseError",
    "ReleaseInfo",
    "ReleaseNotFoundError",
    "ReleaseStore",
    "SignedManifest",
    "TensorSpec",
    "VerificationError",
    "bucket_of",
    "db_url_for",
    "describe_onnx",
    "format_time",
    "generate_release_key",
    "key_id",
    "load_or_create_release_key",
    "load_private_key",
    "load_public_key",
    "parse_time",
    "pin_public_key",
    "public_key_pem",
    "select_release",
    "sign_manifest",
    "verify_manifest",
]
