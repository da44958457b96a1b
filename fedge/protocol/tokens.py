"""The enrolment token: ``fedge1.<secret>.<sha256 of the enrolment certificate>[.<key id>]``.

The coordinator makes a token with :func:`make_token`; a device parses it with
:func:`parse_token` and pins the enrolment port's certificate by the hash before it sends the
secret (the idea of kubeadm's discovery hash). A token for a device of a site names the
enrolment port of the site's gateway, which relays the enrolment to the cloud; it also carries
the id of the cloud's release key, so the device pins that key and no other: a gateway cannot
slip its own key into the relayed reply and then sign models.
"""

from dataclasses import dataclass

from fedge.errors import ConfigError, TokenError

__all__ = ["TOKEN_PREFIX", "EnrollToken", "make_token", "parse_token", "token_secret"]

TOKEN_PREFIX = "fedge1"


@dataclass(frozen=True)
class EnrollToken:
    """A parsed token: the one-time secret, the pinned certificate's hex SHA-256 and, when
    the token names one, the release key id the device must be given."""

    secret: str
    fingerprint: str
    release_key_id: str = ""


def make_token(secret: str, enroll_fingerprint: str, release_key_id: str = "") -> str:
    """The token string an operator hands to a device."""
    token = f"{TOKEN_PREFIX}.{secret}.{enroll_fingerprint}"
    return f"{token}.{release_key_id}" if release_key_id else token


def parse_token(token: str) -> EnrollToken:
    """The parts of a full token; :class:`ConfigError` naming ``--token`` otherwise."""
    parts = token.strip().split(".")
    if (
        len(parts) not in (3, 4)
        or parts[0] != TOKEN_PREFIX
        or not parts[1]
        or not all(len(p) == 64 for p in parts[2:])
    ):
        raise ConfigError("--token", token, "is not a fedge enrolment token (fedge1.SECRET.HASH)")
    return EnrollToken(parts[1], parts[2], parts[3] if len(parts) == 4 else "")


def token_secret(token: str) -> str:
    """The secret of a full token or of a bare secret (what an ``--insecure`` device sends)."""
    parts = token.strip().split(".")
    if len(parts) in (3, 4) and parts[0] == TOKEN_PREFIX and parts[1]:
        return parts[1]
    if len(parts) == 1 and parts[0]:
        return parts[0]
    raise TokenError("the enrolment token is malformed")
