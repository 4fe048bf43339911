"""Key types and their text encodings.

- `Identity` / `Recipient`: age X25519 keys, encoded exactly as the `age` tool writes them
  (`AGE-SECRET-KEY-1...` and `age1...`), so a contact's keys work with stock `age`.
- `SigningKey` / `VerifyKey`: Ed25519, used by contact members to authenticate to the
  relay and by the relay to sign its contact directory. Encoded in the same Bech32 style
  (`AMANAH-SIGNING-KEY-1...`, `amanah-sig1...`) so a mistyped key fails its checksum.

Secret keys never appear in `repr()`: a key object in a log line or a traceback shows its
public half only. `fingerprint()` names a public key in records (which keys a drop was
sealed to) without the key itself having to be stored twice.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from . import bech32
from .errors import KeyEncodingError, SignatureError

RECIPIENT_HRP = "age"
IDENTITY_HRP = "age-secret-key-"
SIGNING_KEY_HRP = "amanah-signing-key-"
VERIFY_KEY_HRP = "amanah-sig"

KEY_SIZE = 32
SIGNATURE_SIZE = 64


# Every key string here is under 90 characters. Refusing longer ones before the checksum
# bounds the work an unauthenticated request can ask for (Bech32 itself has no limit).
MAX_KEY_TEXT = 128


def _decode(text: str, hrp: str, what: str) -> bytes:
    text = text.strip()
    if len(text) > MAX_KEY_TEXT:
        raise KeyEncodingError(f"not an {what}: too long")
    found_hrp, data = bech32.decode(text)
    if found_hrp != hrp:
        raise KeyEncodingError(f"not an {what}: expected a string starting {hrp}1")
    if len(data) != KEY_SIZE:
        raise KeyEncodingError(f"not an {what}: wrong key length")
    return data


def fingerprint(public_key: bytes) -> str:
    """A short, stable name for a public key: 32 hex characters of SHA-256, with a
    domain label so it matches no other hash of the same bytes."""
    return hashlib.sha256(b"amanah-key-fingerprint-v1\x00" + public_key).hexdigest()[:32]


@dataclass(frozen=True)
class Recipient:
    """An age X25519 recipient (public key)."""

    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != KEY_SIZE:
            raise KeyEncodingError("an X25519 public key is 32 bytes")

    @classmethod
    def parse(cls, text: str) -> Recipient:
        """Parses `age1...`. Raises KeyEncodingError."""
        return cls(_decode(text, RECIPIENT_HRP, "age recipient"))

    def __str__(self) -> str:
        return bech32.encode(RECIPIENT_HRP, self.public_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


@dataclass(frozen=True)
class Identity:
    """An age X25519 identity (secret key). `encode()` gives the `AGE-SECRET-KEY-1...`
    line; `str()` and `repr()` deliberately do not."""

    secret_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret_key) != KEY_SIZE:
            raise KeyEncodingError("an X25519 secret key is 32 bytes")

    @classmethod
    def generate(cls) -> Identity:
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def parse(cls, text: str) -> Identity:
        """Parses `AGE-SECRET-KEY-1...`. Raises KeyEncodingError."""
        return cls(_decode(text, IDENTITY_HRP, "age identity"))

    def encode(self) -> str:
        return bech32.encode(IDENTITY_HRP, self.secret_key).upper()

    @property
    def recipient(self) -> Recipient:
        return Recipient(nacl.bindings.crypto_scalarmult_base(self.secret_key))

    def __str__(self) -> str:
        return f"Identity({self.recipient})"

    def __repr__(self) -> str:
        return str(self)


def parse_recipients(values: Iterable[str | Recipient]) -> list[Recipient]:
    """Accepts `age1...` strings or Recipient objects. Raises KeyEncodingError, and
    ValueError for an empty list (a file sealed to nobody can never be opened)."""
    parsed = [v if isinstance(v, Recipient) else Recipient.parse(v) for v in values]
    if not parsed:
        raise ValueError("at least one recipient is needed")
    return parsed


def parse_identities(values: Iterable[str | Identity]) -> list[Identity]:
    """Accepts identity strings, Identity objects, or whole identity-file texts (as
    `age -i` reads them: one key per line, `#` comments and blank lines ignored).
    Raises KeyEncodingError, naming the line but never its content."""
    parsed: list[Identity] = []
    for value in values:
        if isinstance(value, Identity):
            parsed.append(value)
            continue
        for number, line in enumerate(value.splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                parsed.append(Identity.parse(line))
            except KeyEncodingError as exc:
                raise KeyEncodingError(f"identity line {number}: {exc}") from None
    if not parsed:
        raise ValueError("no identity given")
    return parsed


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key."""

    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != KEY_SIZE:
            raise KeyEncodingError("an Ed25519 public key is 32 bytes")

    @classmethod
    def parse(cls, text: str) -> VerifyKey:
        return cls(_decode(text, VERIFY_KEY_HRP, "Amanah signing public key"))

    def __str__(self) -> str:
        return bech32.encode(VERIFY_KEY_HRP, self.public_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raises SignatureError unless `signature` is this key's over `message`."""
        if len(signature) != SIGNATURE_SIZE:
            raise SignatureError("signature has the wrong length")
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
            raise SignatureError("signature does not verify") from exc


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 secret key (its 32-byte seed). `encode()` gives the
    `AMANAH-SIGNING-KEY-1...` line; `repr()` shows only the public half."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != KEY_SIZE:
            raise KeyEncodingError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        return cls(_decode(text, SIGNING_KEY_HRP, "Amanah signing key"))

    def encode(self) -> str:
        return bech32.encode(SIGNING_KEY_HRP, self.seed).upper()

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(bytes(nacl.signing.SigningKey(self.seed).verify_key))

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature over `message`."""
        return nacl.signing.SigningKey(self.seed).sign(message).signature

    def __str__(self) -> str:
        return f"SigningKey({self.verify_key})"

    def __repr__(self) -> str:
        return str(self)
