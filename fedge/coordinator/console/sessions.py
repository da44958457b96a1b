"""Console logins: one-time tokens minted for an operator, exchanged for a session cookie.

The pattern of Jupyter's token URL: ``fedge console`` asks the control service (mutual TLS,
operator certificate) for a login token; opening ``/login?token=...`` once turns it into a
session whose id lives only in an HttpOnly cookie. Only hashes are kept, in memory: a
coordinator restart ends every session (the operator asks for a new URL).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

__all__ = ["ConsoleSessions", "Session"]


@dataclass(frozen=True)
class Session:
    """An open console session: who opened it and until when it lasts."""

    operator: str
    expires: float


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ConsoleSessions:
    """One-time login tokens and the sessions they opened (thread-safe)."""

    def __init__(self, *, login_ttl: float = 300.0, session_ttl: float = 12 * 3600.0) -> None:
        self.login_ttl = login_ttl
        self.session_ttl = session_ttl
        self._logins: dict[str, Session] = {}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create_login(self, operator: str) -> tuple[str, float]:
        """A new one-time login token for ``operator`` and when it expires."""
        token = secrets.token_urlsafe(32)
        expires = time.time() + self.login_ttl
        with self._lock:
            self._prune()
            self._logins[_hash(token)] = Session(operator, expires)
        return token, expires

    def redeem(self, token: str) -> tuple[str, Session] | None:
        """Exchange a login token (once) for a new session id; ``None`` if it is no good."""
        with self._lock:
            self._prune()
            login = self._logins.pop(_hash(token), None)
            if login is None:
                return None
            session_id = secrets.token_urlsafe(32)
            session = Session(login.operator, time.time() + self.session_ttl)
            self._sessions[_hash(session_id)] = session
            return session_id, session

    def session(self, session_id: str) -> Session | None:
        """The open session ``session_id`` names, if any."""
        with self._lock:
            session = self._sessions.get(_hash(session_id))
            if session is None or session.expires < time.time():
                return None
            return session

    def _prune(self) -> None:
        now = time.time()
        for table in (self._logins, self._sessions):
            for key in [k for k, v in table.items() if v.expires < now]:
                del table[key]
