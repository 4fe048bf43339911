"""The AEAD (OpenSSL, through pyca/cryptography) agrees byte for byte with an independent
implementation, libsodium's (through PyNaCl), and refuses what it must."""

from __future__ import annotations

import os

import nacl.bindings
import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto.primitives import TAG_SIZE, ChunkAead, aead_open, aead_seal

KEY = bytes(range(32))
LIMIT = 64 * 1024


@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=12, max_size=12),
    st.one_of(st.binary(max_size=300), st.integers(LIMIT - 3, LIMIT).map(os.urandom)),
)
def test_sealing_equals_libsodium(key: bytes, nonce: bytes, plaintext: bytes) -> None:
    expected = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, None, nonce, key)
    aead = ChunkAead(key, LIMIT)
    assert aead.seal(nonce, plaintext) == expected
    assert aead.seal(nonce, memoryview(plaintext)) == expected
    assert aead.open(nonce, expected) == plaintext
    assert aead.open(nonce, memoryview(expected)) == plaintext
    assert aead_seal(key, nonce, plaintext) == expected
    assert aead_open(key, nonce, expected) == plaintext


def test_an_earlier_result_never_changes() -> None:
    aead = ChunkAead(KEY, LIMIT)
    nonce = bytes(12)
    long_one = aead.seal(nonce, b"x" * 1000)
    short_one = aead.seal(nonce, b"y")
    assert len(short_one) == 1 + TAG_SIZE
    opened_long = aead.open(nonce, long_one)
    assert aead.open(nonce, short_one) == b"y"
    # The returned bytes are copies: a later call does not change an earlier result.
    assert opened_long == b"x" * 1000
    assert aead.open(nonce, long_one) == b"x" * 1000
    assert aead_open(KEY, nonce, long_one) == b"x" * 1000


def test_tampering_and_bad_sizes_are_refused() -> None:
    aead = ChunkAead(KEY, LIMIT)
    nonce = bytes(11) + b"\x01"
    sealed = aead.seal(nonce, b"payload")
    for i in range(len(sealed)):
        flipped = bytearray(sealed)
        flipped[i] ^= 0x01
        assert aead.open(nonce, bytes(flipped)) is None
    assert aead.open(bytes(12), sealed) is None  # the final flag is part of the nonce
    assert aead.open(nonce, sealed[:-1]) is None
    assert aead.open(nonce, b"") is None
    assert aead.open(nonce, b"\x00" * (TAG_SIZE - 1)) is None
    with pytest.raises(ValueError):
        aead.seal(nonce, b"x" * (LIMIT + 1))
    with pytest.raises(ValueError):
        aead.open(nonce, b"x" * (LIMIT + TAG_SIZE + 1))
    with pytest.raises(ValueError):
        ChunkAead(b"short", LIMIT)
