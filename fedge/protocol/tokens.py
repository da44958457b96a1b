"""The enrolment token: ``fedge1.<secret>.<sha256 of the enrolment certificate>``.

The coordinator (or a site gateway) makes a token with :func:`make_token`; a device parses it with
:func:`parse_token` and pins the enrolment port's certificate by the hash before it sends the
secret (the idea of kubeadm's discovery hash).
"""

from dataclasses import dataclass

from fedge.errors import ConfigError, TokenError

__all__ = ["TOKEN_PREFIX", "EnrollToken", "make_token", "parse_token", "token_secret"]

TOKEN_PREFIX = "fedge1"


@dataclass(frozen=True)
class EnrollToken:
    """A parsed token: the one-time secret and the pinned certificate's hex SHA-256."""

    secret: str
    fingerprint: str


def make_token(secret: str, enroll_fingerprint: str) -> str:
    """The token string an operator hands to a device."""
    return f"{TOKEN_PREFIX}.{secret}.{enroll_fingerprint}"


def parse_token(token: str) -> EnrollToken:
    """The parts of a full token; :class:`ConfigError` naming ``--token`` otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or not parts[1] or len(parts[2]) != 64:
        raise ConfigError("--token", token, "is not a fedge enrolment token (fedge1.SECRET.HASH)")
    return EnrollToken(parts[1], parts[2])


def token_secret(token: str) -> str:
    """The secret of a full token or of a bare secret (what an ``--insecure`` device sends)."""
    parts = token.strip().split(".")
    if len(parts) == 3 and parts[0] == TOKEN_PREFIX and parts[1]:
        return parts[1]
    if len(parts) == 1 and parts[0]:
        return parts[0]
    raise TokenError("the enrolment token is malformed")
