"""The few primitives the rest of `crypto` builds on, each with the reason it is here.

- HKDF-SHA-256 (RFC 5869) from the standard library's `hmac`: age derives every key with
  it, and one 32-byte output block is all anything here needs.
- ChaCha20-Poly1305 (IETF, 96-bit nonce) from pyca/cryptography (OpenSSL): every payload
  byte goes through it, and OpenSSL's vectorised code is ~4x libsodium's here (measured
  1 GiB in 64 KiB chunks: 0.34 CPU-s against 1.36 through PyNaCl's cffi; the same bytes,
  which tests/crypto check against libsodium). It also runs without the GIL, so sealing
  on one thread does not stall the others.
- X25519 from libsodium through PyNaCl, which the rest of the project (Ed25519, Argon2id,
  onion keys) uses as well.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_SIZE = 32
TAG_SIZE = 16
NONCE_SIZE = 12


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """32 bytes of HKDF-SHA-256. An empty salt is HMAC's zero key, as RFC 5869 says."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    """ChaCha20-Poly1305 encryption with no associated data; ciphertext || 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, None)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes) -> bytes | None:
    """The plaintext, or None if the tag does not verify (callers raise their own error)."""
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, None)
    except InvalidTag:
        return None


class ChunkAead:
    """ChaCha20-Poly1305 under one key, for many messages of at most `max_size` bytes (the
    payload's chunks): the key is set up once. Each call returns new bytes; inputs may be
    views, read during the call only."""

    def __init__(self, key: bytes, max_size: int) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("ChaCha20-Poly1305 keys are 32 bytes")
        self._aead = ChaCha20Poly1305(key)
        self._max = max_size

    def seal(self, nonce: bytes, plaintext: bytes | memoryview) -> bytes:
        if len(plaintext) > self._max:
            raise ValueError("message longer than this AEAD's limit")
        if len(nonce) != NONCE_SIZE:
            raise ValueError("ChaCha20-Poly1305 (IETF) nonces are 12 bytes")
        return self._aead.encrypt(nonce, plaintext, None)

    def open(self, nonce: bytes, ciphertext: bytes | memoryview) -> bytes | None:
        """The plaintext, or None if the tag does not verify (nor can it on input shorter
        than the tag: the library says InvalidTag then too)."""
        if len(ciphertext) > self._max + TAG_SIZE:
            raise ValueError("message longer than this AEAD's limit")
        if len(nonce) != NONCE_SIZE:
            raise ValueError("ChaCha20-Poly1305 (IETF) nonces are 12 bytes")
        try:
            return self._aead.decrypt(nonce, ciphertext, None)
        except InvalidTag:
            return None


def x25519(scalar: bytes, point: bytes) -> bytes | None:
    """X25519(scalar, point), or None when the result is all zeros (a low-order point):
    libsodium refuses that case, and age requires the caller to abort on it."""
    try:
        shared = nacl.bindings.crypto_scalarmult(scalar, point)
    except nacl.exceptions.RuntimeError:
        return None
    if not any(shared):
        return None
    return shared
