"""Journalist authentication: Ed25519 challenge-response for short-lived bearer tokens.

    1. client -> relay   {verify_key}                       relay -> {challenge}
    2. client signs      crypto.auth.auth_message(relay directory key, challenge)
    3. client -> relay   {verify_key, challenge, signature}  relay -> {token, expires_in}

Rules:
- a challenge is random, good for `challenge_seconds`, bound to the key it was issued for,
  and used at most once (taken from the table before its signature is checked), so a
  captured answer cannot be replayed;
- the signed message names this relay's directory key, so an answer given to one relay is
  worth nothing at another;
- a challenge is issued for any well-formed key, known or not, so the endpoint does not
  tell who is a member; an unknown key fails at step 3 like a bad signature;
- tokens are random 32 bytes; only their SHA-256 is kept, in RAM: a restart logs everyone
  out, and nothing about sessions ever reaches the disk.

The clock is passed in, so tests control time.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass

from crypto.auth import CHALLENGE_SIZE, auth_message
from crypto.errors import KeyEncodingError, SignatureError
from crypto.keys import VerifyKey

from .errors import ClientError, Unauthorized

# Bounds RAM under a flood of challenge requests; the oldest are dropped first.
MAX_OUTSTANDING = 10_000


@dataclass(frozen=True)
class Session:
    verify_key: str
    expires_at: float


class Authenticator:
    def __init__(self, relay_key: VerifyKey, challenge_seconds: int, token_seconds: int) -> None:
        self._relay_key = relay_key
        self._challenge_seconds = challenge_seconds
        self._token_seconds = token_seconds
        self._challenges: dict[bytes, tuple[str, float]] = {}
        self._tokens: dict[bytes, Session] = {}

    def challenge(self, verify_key: str, now: float) -> bytes:
        """A fresh challenge for `verify_key`. Raises ClientError for a malformed key."""
        verify_key = canonical_key(verify_key)
        self._expire(now)
        while len(self._challenges) >= MAX_OUTSTANDING:
            self._challenges.pop(next(iter(self._challenges)))
        value = secrets.token_bytes(CHALLENGE_SIZE)
        self._challenges[value] = (verify_key, now + self._challenge_seconds)
        return value

    def answer(
        self, verify_key: str, challenge: bytes, signature: bytes, now: float, is_member: bool
    ) -> str:
        """A token, if `signature` answers `challenge` for a member key. Raises Unauthorized."""
        key = _parse_key(verify_key)
        verify_key = str(key)  # the canonical form, as issued and as the store knows it
        issued = self._challenges.pop(challenge, None)
        if issued is None or issued[0] != verify_key or issued[1] < now:
            raise Unauthorized("unknown, expired or already used challenge")
        try:
            key.verify(auth_message(self._relay_key, challenge), signature)
        except SignatureError:
            raise Unauthorized("signature does not verify") from None
        if not is_member:
            raise Unauthorized("signature does not verify")
        token = secrets.token_bytes(32)
        self._tokens[hashlib.sha256(token).digest()] = Session(
            verify_key, now + self._token_seconds
        )
        return base64.urlsafe_b64encode(token).decode().rstrip("=")

    def session(self, token: str, now: float) -> Session:
        """The session a bearer token belongs to. Raises Unauthorized."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise Unauthorized("malformed token") from None
        session = self._tokens.get(hashlib.sha256(raw).digest())
        if session is None or session.expires_at < now:
            raise Unauthorized("unknown or expired token")
        return session

    def revoke(self, verify_key: str) -> None:
        """Ends every session of a member (removed or rotated)."""
        for digest in [d for d, s in self._tokens.items() if s.verify_key == verify_key]:
            del self._tokens[digest]

    @property
    def token_seconds(self) -> int:
        return self._token_seconds

    @property
    def challenge_seconds(self) -> int:
        return self._challenge_seconds

    def _expire(self, now: float) -> None:
        # Both tables are in issue order and every entry lives equally long, so the
        # expired ones are at the front: constant work per request, not a scan.
        while self._challenges:
            first = next(iter(self._challenges))
            if self._challenges[first][1] >= now:
                break
            del self._challenges[first]
        while self._tokens:
            first = next(iter(self._tokens))
            if self._tokens[first].expires_at >= now:
                break
            del self._tokens[first]


def canonical_key(text: str) -> str:
    """The one spelling of a signing public key (lowercase, no spaces). Raises ClientError."""
    return str(_parse_key(text))


def _parse_key(text: str) -> VerifyKey:
    try:
        return VerifyKey.parse(text)
    except KeyEncodingError:
        raise ClientError("verify_key is not an Amanah signing public key") from None
