"""The few primitives the rest of `crypto` builds on, each with the reason it is here.

- HKDF-SHA-256 (RFC 5869) from the standard library's `hmac`: age derives every key with
  it, and one 32-byte output block is all anything here needs.
- ChaCha20-Poly1305 (IETF, 96-bit nonce) and X25519 from libsodium through PyNaCl: the one
  audited C library does all the curve and cipher work.
"""

from __future__ import annotations

import hashlib
import hmac

import nacl.bindings
import nacl.exceptions

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
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, None, nonce, key)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes) -> bytes | None:
    """The plaintext, or None if the tag does not verify (callers raise their own error)."""
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(ciphertext, None, nonce, key)
    except nacl.exceptions.CryptoError:
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
