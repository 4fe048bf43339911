"""Onion-service keys and addresses, computed here without asking tor (no I/O).

- A service key is a 32-byte Ed25519 seed. Tor's ADD_ONION wants the "expanded" secret
  key instead: SHA-512(seed), first half clamped as Ed25519 does (RFC 8032, 5.1.5), in
  base64. The public key is the seed's Ed25519 public key.
- A v3 address is base32(pubkey || checksum || version), lowercased, plus ".onion", where
  checksum = SHA3-256(".onion checksum" || pubkey || version)[:2] and version = 0x03
  (rend-spec-v3, 6). Computing it locally lets the relay check tor's answer, and lets
  `amanah status` show the addresses while tor is not running.
- A client-auth key is an X25519 key pair (rend-spec-v3, "client authorization"). The
  service is given the public half in base32; the member's tor is given the private half,
  in the line format of tor's ClientOnionAuthDir files:
  `<address-without-.onion>:descriptor:x25519:<base32 private key>`.

Secret keys never appear in `repr()` or `str()`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass, field

import nacl.bindings

from .errors import OnionKeyError

KEY_SIZE = 32
VERSION = b"\x03"
CHECKSUM_LABEL = b".onion checksum"
SERVICE_ID_LENGTH = 56
_SERVICE_ID = re.compile(r"[a-z2-7]{56}")


def b32encode(data: bytes) -> str:
    """Base32 without padding, upper case, as tor writes keys."""
    return base64.b32encode(data).decode("ascii").rstrip("=")


def b32decode(text: str) -> bytes:
    """Raises ValueError for anything but base32 (either case, padding optional)."""
    text = text.strip().upper().rstrip("=")
    if not re.fullmatch(r"[A-Z2-7]+", text):
        raise ValueError("not base32")
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except binascii.Error as exc:
        raise ValueError("not base32") from exc


def _checksum(public_key: bytes) -> bytes:
    return hashlib.sha3_256(CHECKSUM_LABEL + public_key + VERSION).digest()[:2]


def onion_address(public_key: bytes) -> str:
    """The full v3 address (`….onion`) of an Ed25519 public key."""
    if len(public_key) != KEY_SIZE:
        raise ValueError("an Ed25519 public key is 32 bytes")
    raw = public_key + _checksum(public_key) + VERSION
    return b32encode(raw).lower() + ".onion"


def service_id(address: str) -> str:
    """The address without `.onion` (what the control protocol calls a ServiceID), after
    checking it is a well-formed v3 address with a valid checksum. Raises ValueError."""
    text = address.strip().lower().removesuffix(".onion")
    if not _SERVICE_ID.fullmatch(text):
        raise ValueError("not a v3 onion address (56 base32 characters, then .onion)")
    raw = b32decode(text)
    public_key, checksum, version = raw[:32], raw[32:34], raw[34:]
    if version != VERSION or checksum != _checksum(public_key):
        raise ValueError("not a v3 onion address (its checksum is wrong)")
    return text


@dataclass(frozen=True)
class ServiceKey:
    """An onion service's identity: the Ed25519 seed. The address follows from it."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != KEY_SIZE:
            raise OnionKeyError("an onion service key is a 32-byte Ed25519 seed")

    @classmethod
    def generate(cls) -> ServiceKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    @property
    def public_key(self) -> bytes:
        public, _ = nacl.bindings.crypto_sign_seed_keypair(self.seed)
        return bytes(public)

    @property
    def address(self) -> str:
        return onion_address(self.public_key)

    @property
    def service_id(self) -> str:
        return self.address.removesuffix(".onion")

    def tor_key_blob(self) -> str:
        """The `ED25519-V3:` key ADD_ONION takes: the expanded secret key in base64."""
        digest = bytearray(hashlib.sha512(self.seed).digest())
        digest[0] &= 248
        digest[31] &= 127
        digest[31] |= 64
        return base64.b64encode(bytes(digest)).decode("ascii")

    def __repr__(self) -> str:
        return f"ServiceKey({self.address})"

    __str__ = __repr__


@dataclass(frozen=True)
class ClientAuthKey:
    """One member's X25519 client-authorisation key pair (or its private half, from which
    the public half follows)."""

    private_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.private_key) != KEY_SIZE:
            raise OnionKeyError("a client-auth key is a 32-byte X25519 key")

    @classmethod
    def generate(cls) -> ClientAuthKey:
        key = bytearray(secrets.token_bytes(KEY_SIZE))
        # Clamped as X25519 uses it (RFC 7748, 5), so every tor reads the same scalar.
        key[0] &= 248
        key[31] &= 127
        key[31] |= 64
        return cls(bytes(key))

    @property
    def public_key(self) -> bytes:
        return bytes(nacl.bindings.crypto_scalarmult_base(self.private_key))

    @property
    def public_base32(self) -> str:
        """What ADD_ONION's `ClientAuthV3=` takes, and what the relay stores."""
        return b32encode(self.public_key)

    @property
    def private_base64(self) -> str:
        """What ONION_CLIENT_AUTH_ADD takes after `x25519:`."""
        return base64.b64encode(self.private_key).decode("ascii")

    def auth_private_line(self, address: str) -> str:
        """The line of a `<ClientOnionAuthDir>/NAME.auth_private` file for `address`."""
        return f"{service_id(address)}:descriptor:x25519:{b32encode(self.private_key)}"

    def __repr__(self) -> str:
        return f"ClientAuthKey(public={self.public_base32})"

    __str__ = __repr__


def parse_public_base32(text: str) -> bytes:
    """A client-auth public key as ADD_ONION takes it. Raises ValueError."""
    raw = b32decode(text)
    if len(raw) != KEY_SIZE:
        raise ValueError("a client-auth public key is 32 bytes")
    return raw


def parse_auth_private(text: str) -> tuple[str, ClientAuthKey]:
    """(service id, key) from the text of an `.auth_private` file: one line, blank lines
    and `#` comments ignored. Raises OnionKeyError without quoting the key."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise OnionKeyError("an .auth_private file holds exactly one key line")
    parts = lines[0].split(":")
    if len(parts) != 4 or parts[1:3] != ["descriptor", "x25519"]:
        raise OnionKeyError("not an .auth_private line (<address>:descriptor:x25519:<base32 key>)")
    try:
        sid = service_id(parts[0])
        raw = b32decode(parts[3])
    except ValueError as exc:
        raise OnionKeyError(f"not an .auth_private line: {exc}") from None
    return sid, ClientAuthKey(raw)
