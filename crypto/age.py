"""The age v1 file format (age-encryption.org/v1) with X25519 recipients: the front door.

Every drop Amanah stores or delivers is an age file, so a contact can always open it with
the stock `age` tool. This module is sans-I/O at its core: `Encryptor` and `Decryptor`
take bytes and return bytes, for an asyncio caller to feed chunk by chunk. The
`*_stream` functions are thin loops over binary file objects the caller opened.

    encrypt(data, recipients) -> bytes          decrypt(data, identities) -> bytes
    encrypt_stream(src, dst, recipients)        decrypt_stream(src, dst, identities)

Recipients are `age1...` strings (or keys.Recipient), identities `AGE-SECRET-KEY-1...`
strings (or keys.Identity, or whole identity-file texts).

Decryption order, and why: the header is parsed in full, an identity unwraps the file
key, and the header MAC is verified, all before a byte of payload is touched, so a
modified header releases nothing. Payload chunks are then released one by one as each
authenticates; truncation is only detectable at the end (`PayloadError` from finalize),
which is why `decrypt()` returns nothing on failure and callers of the streaming forms
must write to a temporary place and keep the result only when finalize succeeds.

Errors: `errors.HeaderError` (and `ArmorError`), `NoIdentityMatchError`, `HeaderMACError`,
`PayloadError`: the four failures of age's test kit. Nothing else escapes for any input.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import BinaryIO

from . import format as fmt
from .armor import ArmorDecoder, looks_armored
from .errors import HeaderError, HeaderMACError, NoIdentityMatchError, PayloadError
from .keys import Identity, Recipient, parse_identities, parse_recipients
from .primitives import TAG_SIZE, aead_open, aead_seal, hkdf_sha256, hmac_sha256, x25519
from .stream import PayloadCipher, StreamDecryptor, StreamEncryptor

__all__ = [
    "Decryptor",
    "Encryptor",
    "check_x25519_stanza",
    "decrypt",
    "decrypt_stream",
    "encrypt",
    "encrypt_stream",
    "open_payload",
]

FILE_KEY_SIZE = 16
NONCE_SIZE = 16
X25519_TYPE = "X25519"
X25519_INFO = b"age-encryption.org/v1/X25519"
_ZERO_NONCE = bytes(12)
_BASEPOINT = (9).to_bytes(32, "little")

# 1 MiB reads: measured here, 1 MiB pieces seal ~50% faster than 64 KiB ones (fewer
# Python-level calls per byte) at no cost in memory that matters.
READ_SIZE = 1 << 20
# Sealing threads of encrypt_stream: one 1 MiB read is 16 chunks, so runs of 4 or more.
MAX_THREADS = 4


def _wrap_x25519(file_key: bytes, recipient: Recipient) -> fmt.Stanza:
    ephemeral_secret = secrets.token_bytes(32)
    ephemeral_share = x25519(ephemeral_secret, _BASEPOINT)
    shared = x25519(ephemeral_secret, recipient.public_key)
    if ephemeral_share is None or shared is None:
        # Only a low-order "public key" does this: no real recipient.
        raise ValueError("recipient is not a usable X25519 public key")
    salt = ephemeral_share + recipient.public_key
    wrap_key = hkdf_sha256(shared, salt, X25519_INFO)
    body = aead_seal(wrap_key, _ZERO_NONCE, file_key)
    return fmt.Stanza(X25519_TYPE, (fmt.b64encode(ephemeral_share).decode(),), body)


def check_x25519_stanza(stanza: fmt.Stanza) -> bytes:
    """The ephemeral share of a well-formed X25519 stanza (its type is the caller's to
    check). A malformed one is an error, not something to skip: the spec says such stanzas
    MUST be rejected. Raises HeaderError."""
    if len(stanza.args) != 1:
        raise HeaderError("X25519 stanza must have exactly two arguments")
    share = fmt.decode_ascii_arg(stanza.args[0], 32, "X25519 ephemeral share")
    # Checked before any decryption attempt, against partitioning-oracle attacks.
    if len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
        raise HeaderError("X25519 stanza body has the wrong length")
    return share


def _unwrap(stanzas: tuple[fmt.Stanza, ...], identities: list[Identity]) -> bytes:
    if any(s.type == "scrypt" for s in stanzas):
        if len(stanzas) != 1:
            raise HeaderError("an scrypt stanza must be the only stanza in the header")
        raise NoIdentityMatchError("file is sealed with a passphrase; Amanah uses keys only")
    shares = [(s, check_x25519_stanza(s)) for s in stanzas if s.type == X25519_TYPE]
    for identity in identities:
        own_public = identity.recipient.public_key
        for stanza, share in shares:
            shared = x25519(identity.secret_key, share)
            if shared is None:
                raise HeaderError("X25519 stanza gives an all-zero shared secret")
            wrap_key = hkdf_sha256(shared, share + own_public, X25519_INFO)
            file_key = aead_open(wrap_key, _ZERO_NONCE, stanza.body)
            if file_key is not None:
                return file_key
    raise NoIdentityMatchError("no identity matched any of the file's recipients")


def _open_header(header_bytes: bytes, identities: list[Identity]) -> bytes:
    """The file key, once an identity unwrapped it and the header MAC verified."""
    header = fmt.parse_header(header_bytes)
    file_key = _unwrap(header.stanzas, identities)
    expected = hmac_sha256(hkdf_sha256(file_key, b"", b"header"), header.mac_input)
    if not hmac.compare_digest(expected, header.mac):
        raise HeaderMACError("header MAC does not verify: the header was modified")
    return file_key


def open_payload(prefix: bytes, identities: Iterable[str | Identity]) -> tuple[int, PayloadCipher]:
    """For random access: given the start of an age file (at least its header and the
    16-byte nonce), returns (offset of the first payload chunk, a PayloadCipher for it).
    Chunk i then lies at offset + i * SEALED_CHUNK_SIZE. Binary files only.
    Raises HeaderError (also for a prefix too short), NoIdentityMatchError, HeaderMACError."""
    end = fmt.find_header_end(prefix)
    if end is None or len(prefix) < end + NONCE_SIZE:
        raise HeaderError("file is truncated: incomplete header")
    file_key = _open_header(prefix[:end], parse_identities(identities))
    nonce = prefix[end : end + NONCE_SIZE]
    return end + NONCE_SIZE, PayloadCipher(hkdf_sha256(file_key, nonce, b"payload"))


class Encryptor:
    """Seals one age file. The first update() (or finalize()) output starts with the
    header; write every returned piece, in order, then the finalize() pieces."""

    def __init__(
        self, recipients: Iterable[str | Recipient], *, pool: Executor | None = None, share: int = 1
    ) -> None:
        """Raises KeyEncodingError for a malformed recipient, ValueError for none. With
        `pool` and `share`, chunks are sealed `share` runs at a time (StreamEncryptor)."""
        file_key = secrets.token_bytes(FILE_KEY_SIZE)
        stanzas = [_wrap_x25519(file_key, r) for r in parse_recipients(recipients)]
        mac_input = fmt.encode_mac_input(stanzas)
        mac = hmac_sha256(hkdf_sha256(file_key, b"", b"header"), mac_input)
        nonce = secrets.token_bytes(NONCE_SIZE)
        self._preamble: bytes | None = fmt.encode_header(mac_input, mac) + nonce
        self._stream = StreamEncryptor(hkdf_sha256(file_key, nonce, b"payload"), pool, share)

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """`data` is read during the call and never kept: the caller may reuse it."""
        return self._with_preamble(self._stream.update(data))

    def finalize(self) -> list[bytes]:
        return self._with_preamble(self._stream.finalize())

    def _with_preamble(self, pieces: list[bytes]) -> list[bytes]:
        if self._preamble is not None:
            pieces.insert(0, self._preamble)
            self._preamble = None
        return pieces


class Decryptor:
    """Opens one age file, binary or armored. Feed it with update(); finish with
    finalize(). Returns plaintext pieces; raises the errors in the module docstring."""

    def __init__(self, identities: Iterable[str | Identity]) -> None:
        """Raises KeyEncodingError for a malformed identity, ValueError for none."""
        self._identities = parse_identities(identities)
        self._buffer = b""
        self._armor: ArmorDecoder | None = None
        self._armor_decided = False
        self._file_key: bytes | None = None
        self._stream: StreamDecryptor | None = None

    def update(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """`data` is read during the call and never kept: the caller may reuse it."""
        if self._stream is not None and self._armor is None:
            return self._stream.update(data)  # the payload: chunks opened from views
        data = bytes(data)
        if not self._armor_decided:
            self._buffer += data
            armored = looks_armored(self._buffer)
            if armored is None:
                return []
            self._armor_decided = True
            self._armor = ArmorDecoder() if armored else None
            data, self._buffer = self._buffer, b""
        if self._armor is not None:
            data = self._armor.update(data)
        return self._binary(data)

    def finalize(self) -> list[bytes]:
        out: list[bytes] = []
        if not self._armor_decided:
            self._armor_decided = True
            if looks_armored(self._buffer):
                self._armor = ArmorDecoder()
            data, self._buffer = self._buffer, b""
            out += self.update(data) if data else []
        if self._armor is not None:
            out += self._binary(self._armor.finalize())
        if self._stream is None:
            if self._file_key is not None:
                raise PayloadError("file is truncated: no payload")
            fmt.check_start(self._buffer)
            raise HeaderError("file is truncated: incomplete header")
        return out + self._stream.finalize()

    def _binary(self, data: bytes) -> list[bytes]:
        if self._stream is not None:
            return self._stream.update(data)
        self._buffer += data
        if self._file_key is None:
            end = fmt.find_header_end(self._buffer)
            if end is None:
                return []
            self._file_key = _open_header(self._buffer[:end], self._identities)
            self._buffer = self._buffer[end:]
        if len(self._buffer) < NONCE_SIZE:
            return []
        nonce, rest = self._buffer[:NONCE_SIZE], self._buffer[NONCE_SIZE:]
        self._buffer = b""
        self._stream = StreamDecryptor(hkdf_sha256(self._file_key, nonce, b"payload"))
        return self._stream.update(rest)


def encrypt(data: bytes, recipients: Iterable[str | Recipient]) -> bytes:
    """Seals `data` to every recipient. Raises KeyEncodingError or ValueError."""
    encryptor = Encryptor(recipients)
    return b"".join(encryptor.update(data) + encryptor.finalize())


def decrypt(data: bytes, identities: Iterable[str | Identity]) -> bytes:
    """Opens a whole age file (binary or armored). Raises an AgeError subclass."""
    decryptor = Decryptor(identities)
    return b"".join(decryptor.update(data) + decryptor.finalize())


def _pump(src: BinaryIO, dst: BinaryIO, core: Encryptor | Decryptor) -> int:
    """Feeds `src` through `core` into `dst`, 1 MiB at a time. Returns bytes written.
    Reads into one buffer reused throughout (a fresh 1 MiB per read costs page faults
    that measured slower than the cipher); `core` reads it during each call only."""
    written = 0
    buffer = memoryview(bytearray(READ_SIZE))
    readinto = getattr(src, "readinto", None)
    while True:
        if readinto is not None:
            count = readinto(buffer)
            if count is None:
                raise ValueError("src is a non-blocking stream with no data ready")
            data: bytes | memoryview = buffer[:count]
        else:
            data = src.read(READ_SIZE)
        if not data:
            break
        pieces = core.update(data)
        dst.writelines(pieces)
        written += sum(map(len, pieces))
    pieces = core.finalize()
    dst.writelines(pieces)
    return written + sum(map(len, pieces))


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Iterable[str | Recipient],
    *,
    threads: int | None = None,
) -> int:
    """Seals `src` into `dst`, reading 1 MiB at a time. Returns bytes written. The chunks
    are sealed by up to `threads` threads at once (default: the CPUs this process may
    use, at most MAX_THREADS); the bytes are the same for any number."""
    if threads is None:
        threads = min(MAX_THREADS, len(os.sched_getaffinity(0)))
    if threads < 2:
        return _pump(src, dst, Encryptor(recipients))
    with ThreadPoolExecutor(threads - 1, thread_name_prefix="age-seal") as pool:
        return _pump(src, dst, Encryptor(recipients, pool=pool, share=threads))


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identities: Iterable[str | Identity]) -> int:
    """Opens `src` into `dst`. Returns plaintext bytes written. On an AgeError, what was
    already written to `dst` must be discarded (see the module docstring)."""
    return _pump(src, dst, Decryptor(identities))
