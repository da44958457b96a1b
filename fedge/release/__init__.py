"""Signed model releases: manifests, Ed25519 signing, the release store and staged rollout."""

from fedge.release.errors import (
    ArtifactNotFoundError,
    ReleaseError,
    ReleaseNotFoundError,
    VerificationError,
)
from fedge.release.manifest import Manifest, TensorSpec, format_time, parse_time
from fedge.release.onnx_info import describe_onnx
from fedge.release.publish import publish_build, release_figures, resolve_build
from fedge.release.rollout import bucket_of, covered_count, rollout_order, select_release
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
from fedge.release.store import (
    INSTALL_STATES,
    RELEASE_KEY_FILE,
    DeviceTelemetry,
    ReleaseInfo,
    ReleaseStore,
    db_url_for,
    open_release_store,
)

__all__ = [
    "INSTALL_STATES",
    "RELEASE_KEY_FILE",
    "ArtifactNotFoundError",
    "DeviceTelemetry",
    "Manifest",
    "ReleaseError",
    "ReleaseInfo",
    "ReleaseNotFoundError",
    "ReleaseStore",
    "SignedManifest",
    "TensorSpec",
    "VerificationError",
    "bucket_of",
    "covered_count",
    "db_url_for",
    "describe_onnx",
    "format_time",
    "generate_release_key",
    "key_id",
    "load_or_create_release_key",
    "load_private_key",
    "load_public_key",
    "open_release_store",
    "parse_time",
    "pin_public_key",
    "public_key_pem",
    "publish_build",
    "release_figures",
    "resolve_build",
    "rollout_order",
    "select_release",
    "sign_manifest",
    "verify_manifest",
]
