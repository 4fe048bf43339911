"""Browser sessions for sources, in RAM only.

Rules:
- the cookie is a session cookie (no Expires, no Max-Age: it dies with the browser),
  HttpOnly, SameSite=Strict, Path=/; it carries 32 random bytes and nothing else;
- a session holds its CSRF token and, after login, the source's login identifier; never
  the codename, never a key;
- sessions live in this process's memory and end after `IDLE_SECONDS` without use, or at
  a restart; nothing about them is written anywhere;
- every form that changes something carries the session's CSRF token, compared in
  constant time.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

COOKIE = "amanah_session"
# Long enough to read replies and write a follow-up; short enough that a browser left
# open on a shared machine does not stay logged in for long.
IDLE_SECONDS = 30 * 60
MAX_SESSIONS = 50_000  # bounds RAM; the least recently used go first


@dataclass
class Session:
    csrf: str
    login_id: str | None
    last_used: float


class Sessions:
    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def get_or_create(self, session_id: str | None, now: float) -> tuple[str, Session]:
        """The live session for the cookie value, or a new one (new id)."""
        session = self.get(session_id, now)
        if session_id is not None and session is not None:
            return session_id, session
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        new_id = secrets.token_urlsafe(32)
        session = Session(csrf=secrets.token_urlsafe(32), login_id=None, last_used=now)
        self._sessions[new_id] = session
        return new_id, session

    def get(self, session_id: str | None, now: float) -> Session | None:
        """The live session for the cookie value, now used (None if there is none)."""
        self._expire(now)
        if session_id is None or session_id not in self._sessions:
            return None
        session = self._sessions.pop(session_id)  # re-inserted: the order is by last use
        session.last_used = now
        self._sessions[session_id] = session
        return session

    def end(self, session_id: str | None) -> None:
        if session_id is not None:
            self._sessions.pop(session_id, None)

    @staticmethod
    def csrf_ok(session: Session | None, token: str) -> bool:
        return session is not None and hmac.compare_digest(session.csrf.encode(), token.encode())

    def _expire(self, now: float) -> None:
        while self._sessions:
            oldest_id = next(iter(self._sessions))
            if self._sessions[oldest_id].last_used + IDLE_SECONDS >= now:
                break
            del self._sessions[oldest_id]
