"""The few primitives the rest of `crypto` builds on, each with the reason it is here.

- HKDF-SHA-256 (RFC 5869) from the standard library's `hmac`: age derives every key with
  it, and one 32-byte output block is all anything here needs.
- ChaCha20-Poly1305 (IETF, 96-bit nonce) and X25519 from libsodium through PyNaCl: the one
  audited C library does all the curve and cipher work.

Why `ChunkAead` reaches past PyNaCl's public wrapper: for every call,
`nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt` allocates a zero-filled output
buffer and then copies it into a new `bytes`, which costs about a fifth of the payload's
throughput (measured: 923-1015 MB/s through the wrapper, 1137-1150 MB/s calling the same
libsodium function into a buffer reused per key). That function is reached through
`nacl._sodium`, the cffi module PyNaCl's own bindings are built on (unchanged in layout
since PyNaCl 1.0). It is private, so it is used only when it has exactly what is needed,
and otherwise the public wrapper is used: the bytes are the same either way, and
tests/crypto check that they are.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
from typing import Any

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


def _libsodium() -> tuple[Any, Any] | None:
    """PyNaCl's cffi handle on libsodium (ffi, lib), or None if this PyNaCl lacks it."""
    try:
        module = importlib.import_module("nacl._sodium")
    except ImportError:
        return None
    ffi, lib = getattr(module, "ffi", None), getattr(module, "lib", None)
    needed = (
        "crypto_aead_chacha20poly1305_ietf_encrypt",
        "crypto_aead_chacha20poly1305_ietf_decrypt",
    )
    if ffi is None or lib is None or not all(hasattr(lib, name) for name in needed):
        return None
    return ffi, lib


_SODIUM = _libsodium()


class ChunkAead:
    """ChaCha20-Poly1305 under one key, for many messages of at most `max_size` bytes
    (the payload's chunks): same results as aead_seal/aead_open, with one output buffer
    reused across calls. Not for sharing between threads."""

    def __init__(self, key: bytes, max_size: int, *, direct: bool = True) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("ChaCha20-Poly1305 keys are 32 bytes")
        self._key = key
        self._max = max_size
        self._sodium = _SODIUM if direct else None
        if self._sodium is not None:
            ffi = self._sodium[0]
            self._out = ffi.new("unsigned char[]", max_size + TAG_SIZE)
            self._out_len = ffi.new("unsigned long long *")

    @property
    def direct(self) -> bool:
        """True when calls go straight to libsodium (see the module docstring)."""
        return self._sodium is not None

    def seal(self, nonce: bytes, plaintext: bytes | memoryview) -> bytes:
        """`plaintext` may be a view (of contiguous bytes): it is read, never kept."""
        if len(plaintext) > self._max:
            raise ValueError("message longer than this AEAD's buffer")
        if len(nonce) != NONCE_SIZE:
            raise ValueError("ChaCha20-Poly1305 (IETF) nonces are 12 bytes")
        if self._sodium is None:
            return aead_seal(self._key, nonce, bytes(plaintext))
        ffi, lib = self._sodium
        lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            self._out,
            self._out_len,
            plaintext if isinstance(plaintext, bytes) else ffi.from_buffer(plaintext),
            len(plaintext),
            ffi.NULL,
            0,
            ffi.NULL,
            nonce,
            self._key,
        )
        return bytes(ffi.buffer(self._out, len(plaintext) + TAG_SIZE))

    def open(self, nonce: bytes, ciphertext: bytes | memoryview) -> bytes | None:
        """The plaintext, or None if the tag does not verify. `ciphertext` may be a view."""
        if len(ciphertext) > self._max + TAG_SIZE:
            raise ValueError("message longer than this AEAD's buffer")
        if len(nonce) != NONCE_SIZE:
            raise ValueError("ChaCha20-Poly1305 (IETF) nonces are 12 bytes")
        if len(ciphertext) < TAG_SIZE:
            return None
        if self._sodium is None:
            return aead_open(self._key, nonce, bytes(ciphertext))
        ffi, lib = self._sodium
        failed = lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            self._out,
            self._out_len,
            ffi.NULL,
            ciphertext if isinstance(ciphertext, bytes) else ffi.from_buffer(ciphertext),
            len(ciphertext),
            ffi.NULL,
            0,
            nonce,
            self._key,
        )
        if failed:
            return None
        return bytes(ffi.buffer(self._out, len(ciphertext) - TAG_SIZE))


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
