"""Builds age files by hand, so a test can break exactly one rule at a time.

`craft()` assembles a header from raw stanza text, computes a correct MAC for whatever
header it is given (unless told otherwise), and seals a payload from explicit chunks
with explicit final flags. It uses only the standard library and PyNaCl, not
crypto.format or crypto.stream, so a bug there cannot hide itself here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

import nacl.bindings

X25519_INFO = b"age-encryption.org/v1/X25519"


def b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def wrap_lines(body: bytes) -> bytes:
    encoded = b64(body)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    if not lines or len(lines[-1]) == 64:
        lines.append(b"")
    return b"".join(line + b"\n" for line in lines)


def x25519_stanza(
    file_key: bytes, recipient_public: bytes, ephemeral: bytes | None = None
) -> bytes:
    ephemeral = ephemeral or os.urandom(32)
    share = nacl.bindings.crypto_scalarmult_base(ephemeral)
    shared = nacl.bindings.crypto_scalarmult(ephemeral, recipient_public)
    key = hkdf(shared, share + recipient_public, X25519_INFO)
    body = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(file_key, None, bytes(12), key)
    return b"-> X25519 " + b64(share) + b"\n" + wrap_lines(body)


def seal_chunks(file_key: bytes, nonce: bytes, chunks: list[tuple[bytes, bool]]) -> bytes:
    key = hkdf(file_key, nonce, b"payload")
    out = b""
    for counter, (plaintext, final) in enumerate(chunks):
        chunk_nonce = counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")
        out += nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, None, chunk_nonce, key
        )
    return out


def split_chunks(plaintext: bytes) -> list[tuple[bytes, bool]]:
    pieces = [plaintext[i : i + 65536] for i in range(0, len(plaintext), 65536)] or [b""]
    return [(p, i == len(pieces) - 1) for i, p in enumerate(pieces)]


@dataclass
class Crafted:
    header: bytes
    payload: bytes  # nonce || sealed chunks

    @property
    def data(self) -> bytes:
        return self.header + self.payload


def craft(
    file_key: bytes,
    stanzas: list[bytes],
    chunks: list[tuple[bytes, bool]],
    *,
    version_line: bytes = b"age-encryption.org/v1\n",
    mac: bytes | None = None,
    nonce: bytes | None = None,
) -> Crafted:
    mac_input = version_line + b"".join(stanzas) + b"---"
    if mac is None:
        mac = hmac.new(hkdf(file_key, b"", b"header"), mac_input, hashlib.sha256).digest()
    header = mac_input + b" " + b64(mac) + b"\n"
    nonce = nonce if nonce is not None else os.urandom(16)
    return Crafted(header, nonce + seal_chunks(file_key, nonce, chunks))
