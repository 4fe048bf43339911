"""Member cards (a contact member's public keys on one line) and the member identity file.

Rules of this module:
- No I/O. Callers read and write files; this module turns keys into text and back.
- A card is Bech32 (BIP 173) under the HRP `amanah-member`; its data is a version byte
  (0x01), the member's X25519 public key (the age recipient drops are sealed to), then the
  member's Ed25519 public key (what the member signs with when talking to the relay). The
  Bech32 checksum is the card's checksum: a card read aloud, retyped or cut short fails it.
- A card is written lowercase; an all-uppercase card (as in a QR code's alphanumeric mode)
  is accepted, a mixed-case one is not.
- A card never holds a key that could not work: a low-order X25519 point or an invalid
  Ed25519 point is refused when the card is made, not when the first drop fails.
- The identity file is a valid `age` identity file: everything but the one
  `AGE-SECRET-KEY-1...` line is a `#` comment to age, so `age -d -i FILE` opens drops with
  it directly. The signing key rides along in a comment line that only we read.
- Errors name a line number or a property of the input, never its content: the content of
  these lines is a secret key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import nacl.bindings

from . import bech32
from .errors import KeyEncodingError
from .keys import KEY_SIZE, Identity, Recipient, SigningKey, VerifyKey
from .primitives import x25519

CARD_HRP = "amanah-member"
CARD_VERSION = 0x01
_CARD_DATA_SIZE = 1 + 2 * KEY_SIZE
# A card is 124 characters. Anything far longer is refused before the pure-Python Bech32
# checksum runs over it, so a hostile megabyte costs nothing.
_CARD_MAX_TEXT = 256

IDENTITY_FILE_TITLE = "# Amanah member identity"
_SIGNING_KEY_LABEL = "amanah-signing-key:"
_CARD_LABEL = "card:"
_PUBLIC_KEY_LABEL = "public key:"
# Our files are under 1 KiB; a larger text is not one we wrote.
_IDENTITY_FILE_MAX_TEXT = 64 * 1024
_CREATED_MAX = 100

# Any scalar works for the low-order test: X25519 clamps it to a multiple of the cofactor
# 8, so every point of order 1, 2, 4 or 8 maps to the all-zero output, and no other does.
_LOW_ORDER_PROBE = bytes(range(1, KEY_SIZE + 1))

_T = TypeVar("_T")


def _check_recipient(recipient: Recipient) -> None:
    # age aborts on an all-zero shared secret, so a low-order recipient could never
    # receive a drop; refusing it here turns a silent delivery failure into a clear error.
    if x25519(_LOW_ORDER_PROBE, recipient.public_key) is None:
        raise KeyEncodingError("member card: the X25519 key is a low-order point")


def _check_verify_key(verify_key: VerifyKey) -> None:
    # libsodium refuses small-order and non-canonical Ed25519 keys when verifying, so a
    # card with one could never authenticate; refuse it when the card is made.
    if not nacl.bindings.crypto_core_ed25519_is_valid_point(verify_key.public_key):
        raise KeyEncodingError("member card: the Ed25519 key is not a valid public key")


@dataclass(frozen=True)
class MemberCard:
    """A contact member's public keys: the age recipient drops are sealed to, and the
    Ed25519 key the member signs with. Raises KeyEncodingError for a key that cannot work."""

    recipient: Recipient
    verify_key: VerifyKey

    def __post_init__(self) -> None:
        _check_recipient(self.recipient)
        _check_verify_key(self.verify_key)

    def encode(self) -> str:
        """The card as one line: `amanah-member1...` (124 characters)."""
        data = bytes([CARD_VERSION]) + self.recipient.public_key + self.verify_key.public_key
        return bech32.encode(CARD_HRP, data)

    def __str__(self) -> str:
        return self.encode()

    @classmethod
    def parse(cls, text: str) -> MemberCard:
        """Parses a card, ignoring whitespace around it. Raises KeyEncodingError for a
        wrong prefix, version, length or checksum, mixed case, or a key that cannot work."""
        text = text.strip()
        if len(text) > _CARD_MAX_TEXT:
            raise KeyEncodingError("not a member card: too long")
        hrp, data = bech32.decode(text)
        if hrp != CARD_HRP:
            raise KeyEncodingError(f"not a member card: expected a string starting {CARD_HRP}1")
        if not data or data[0] != CARD_VERSION:
            raise KeyEncodingError("member card: unsupported version")
        if len(data) != _CARD_DATA_SIZE:
            raise KeyEncodingError("member card: wrong length")
        return cls(Recipient(data[1 : 1 + KEY_SIZE]), VerifyKey(data[1 + KEY_SIZE :]))


@dataclass(frozen=True)
class MemberIdentity:
    """A member's two secret keys. `repr()` shows only the public halves."""

    identity: Identity
    signing_key: SigningKey

    @classmethod
    def generate(cls) -> MemberIdentity:
        """Fresh keys from the operating system's CSPRNG."""
        return cls(Identity.generate(), SigningKey.generate())

    @property
    def card(self) -> MemberCard:
        """The public card to give the relay operator."""
        return MemberCard(self.identity.recipient, self.signing_key.verify_key)

    def to_file_text(self, created: str) -> str:
        """The identity file's text, readable by `age -d -i`. `created` is a timestamp the
        caller chooses (this module reads no clock). Raises ValueError if `created` is not
        a short single line of printable text (a newline there could smuggle in a key line).
        """
        if len(created) > _CREATED_MAX or not created.isprintable():
            raise ValueError("created must be a short single line of printable text")
        return "\n".join(
            [
                f"{IDENTITY_FILE_TITLE} (created: {created})",
                "# Keep this file private: it opens drops sealed to you and signs as you.",
                f"# {_CARD_LABEL} {self.card.encode()}",
                f"# {_PUBLIC_KEY_LABEL} {self.identity.recipient}",
                self.identity.encode(),
                f"# {_SIGNING_KEY_LABEL} {self.signing_key.encode()}",
                "",
            ]
        )

    @classmethod
    def parse_file_text(cls, text: str) -> MemberIdentity:
        """Reads an identity file: exactly one `AGE-SECRET-KEY-1...` line and exactly one
        `# amanah-signing-key: ...` line; other `#` lines and blank lines are comments, but
        a `# card:` or `# public key:` comment must match the keys (a person reading the
        file would trust it). Raises KeyEncodingError naming the line, never its content."""
        if len(text) > _IDENTITY_FILE_MAX_TEXT:
            raise KeyEncodingError("member identity file: too long")
        identities: list[tuple[int, Identity]] = []
        signing_keys: list[tuple[int, SigningKey]] = []
        claims: list[tuple[int, str, str]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                if not line.startswith("#"):
                    identities.append((number, Identity.parse(line)))
                    continue
                label, value = _comment(line)
                if label == _SIGNING_KEY_LABEL:
                    signing_keys.append((number, SigningKey.parse(value)))
                elif label in (_CARD_LABEL, _PUBLIC_KEY_LABEL):
                    claims.append((number, label, value))
            except KeyEncodingError as exc:
                raise KeyEncodingError(f"member identity file line {number}: {exc}") from None
        identity = _exactly_one(identities, "AGE-SECRET-KEY-1 line")
        signing_key = _exactly_one(signing_keys, "amanah-signing-key line")
        member = cls(identity, signing_key)
        member._check_claims(claims)
        return member

    def _check_claims(self, claims: list[tuple[int, str, str]]) -> None:
        expected = {
            _CARD_LABEL: self.card.encode(),
            _PUBLIC_KEY_LABEL: str(self.identity.recipient),
        }
        for number, label, value in claims:
            if value != expected[label]:
                raise KeyEncodingError(
                    f"member identity file line {number}: the {label[:-1]} shown does not "
                    "match the secret keys in the file"
                )


def _comment(line: str) -> tuple[str, str]:
    """Splits `# label: value` into (lowercase label with colon, value); ("", "") for a
    comment that carries no label we know."""
    body = line[1:].strip()
    for label in (_SIGNING_KEY_LABEL, _CARD_LABEL, _PUBLIC_KEY_LABEL):
        if body.lower().startswith(label):
            return label, body[len(label) :].strip()
    return "", ""


def _exactly_one(found: list[tuple[int, _T]], what: str) -> _T:
    if not found:
        raise KeyEncodingError(f"member identity file: no {what}")
    if len(found) > 1:
        raise KeyEncodingError(f"member identity file line {found[1][0]}: a second {what}")
    return found[0][1]
