"""The age payload: STREAM over ChaCha20-Poly1305 in 64 KiB chunks, sans-I/O.

Chunk i (counting from 0) is sealed with the 12-byte nonce `i as 11 big-endian bytes ||
flag`, where the flag is 0x01 on the final chunk and 0x00 on every other. That flag is
what makes truncation detectable, and it forces both sides to hold one chunk back:
- the encryptor cannot seal a full chunk until it knows whether more input follows;
- the decryptor cannot tell which chunk is final until it sees the end of the input.
So `update()` returns only chunks known not to be the last, and `finalize()` the last.

Rules: the final chunk may be shorter than 64 KiB and is empty only when the whole
payload is; the stream must end with a final chunk and nothing after it.

Why lists of `bytes`: each sealed or opened chunk is already one allocation (the
cipher's output, primitives.ChunkAead); handing the chunks on as a list (for
`writelines`) avoids joining them into a second large buffer, which measured 2-5x slower
here (page faults). Input is read through views and never kept, except the held-back
tail, which is copied: a caller may reuse its buffer after each update().
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

from .errors import PayloadError
from .primitives import TAG_SIZE, ChunkAead

CHUNK_SIZE = 64 * 1024
SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_MAX_COUNTER = 1 << 88  # an 11-byte counter


def chunk_nonce(counter: int, final: bool) -> bytes:
    if counter >= _MAX_COUNTER:
        raise PayloadError("payload too long")
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def sealed_size(plaintext_size: int) -> int:
    """The payload size (without the 16-byte nonce) for `plaintext_size` bytes."""
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return plaintext_size + chunks * TAG_SIZE


Buffer = bytes | bytearray | memoryview


def _split_holding_last(
    pending: bytes, data: Buffer, size: int
) -> tuple[list[bytes | memoryview], bytes]:
    """Cuts `pending + data` into chunks of `size`, keeping back the last 1..size bytes
    (they may be the final chunk). The chunks are views of `data` where they can be (no
    copy; valid only until the caller may change `data`), and what is kept back is always
    a copy of its own."""
    if not data:
        return [], pending
    view = memoryview(data).cast("B")
    chunks: list[bytes | memoryview] = []
    position = 0
    if pending:
        need = size - len(pending)
        if len(view) <= need:
            return chunks, pending + bytes(view)
        chunks.append(pending + bytes(view[:need]))
        position = need
    while len(view) - position > size:
        chunks.append(view[position : position + size])
        position += size
    return chunks, bytes(view[position:])


class PayloadCipher:
    """Seals and opens single chunks by index: the seekable view of a payload (chunks
    are independently decryptable once the payload key is known)."""

    def __init__(self, payload_key: bytes) -> None:
        if len(payload_key) != 32:
            raise ValueError("payload key is 32 bytes")
        self._aead = ChunkAead(payload_key, CHUNK_SIZE)

    def seal(self, counter: int, plaintext: bytes | memoryview, final: bool) -> bytes:
        return self._aead.seal(chunk_nonce(counter, final), plaintext)

    def open(self, counter: int, sealed: bytes | memoryview, final: bool) -> bytes:
        """Raises PayloadError if the chunk was modified, moved, or its flag is wrong."""
        if len(sealed) > SEALED_CHUNK_SIZE:
            raise PayloadError("payload chunk longer than 64 KiB")
        plaintext = self._aead.open(chunk_nonce(counter, final), sealed)
        if plaintext is None:
            raise PayloadError("payload chunk failed authentication (modified or truncated)")
        return plaintext


def _seal_run(
    payload_key: bytes, counter: int, chunks: Sequence[bytes | memoryview]
) -> list[bytes]:
    """Seals consecutive non-final chunks from `counter` on, with a cipher of its own, so
    no cipher object is used by two threads at once (setting one up costs nothing next to
    the chunks of a run)."""
    cipher = PayloadCipher(payload_key)
    return [cipher.seal(counter + i, chunk, False) for i, chunk in enumerate(chunks)]


class StreamEncryptor:
    """Feed plaintext with update(); finish with finalize(). Returns sealed chunks.

    With `pool` (an executor) and `share` > 1, an update() of several chunks is cut into
    `share` runs of consecutive chunks, sealed at once: all but the last in the pool, the
    last in the caller's thread (the cipher runs without the GIL). Each chunk's nonce is
    its index, so the output is the same bytes as one thread's; update() returns when
    every run is sealed, so the caller's buffer is free again as before."""

    def __init__(self, payload_key: bytes, pool: Executor | None = None, share: int = 1) -> None:
        self._key = payload_key
        self._cipher = PayloadCipher(payload_key)
        self._counter = 0
        self._pending = b""  # at most one chunk, held back in case it is the last
        self._done = False
        self._pool = pool if share > 1 else None
        self._share = share

    def update(self, data: Buffer) -> list[bytes]:
        if self._done:
            raise ValueError("encryptor already finalized")
        chunks, self._pending = _split_holding_last(self._pending, data, CHUNK_SIZE)
        if self._pool is not None and len(chunks) >= 2 * self._share:
            return self._seal_shared(self._pool, chunks)
        return [self._seal(chunk, final=False) for chunk in chunks]

    def _seal_shared(self, pool: Executor, chunks: list[bytes | memoryview]) -> list[bytes]:
        size = -(-len(chunks) // self._share)
        starts = range(0, len(chunks), size)
        *others, last = [(self._counter + start, chunks[start : start + size]) for start in starts]
        futures = [pool.submit(_seal_run, self._key, counter, run) for counter, run in others]
        mine = _seal_run(self._key, *last)
        sealed = [piece for future in futures for piece in future.result()]
        self._counter += len(chunks)
        return sealed + mine

    def finalize(self) -> list[bytes]:
        if self._done:
            raise ValueError("encryptor already finalized")
        self._done = True
        last = self._seal(self._pending, final=True)
        self._pending = b""
        return [last]

    def _seal(self, plaintext: bytes | memoryview, final: bool) -> bytes:
        sealed = self._cipher.seal(self._counter, plaintext, final)
        self._counter += 1
        return sealed


class StreamDecryptor:
    """Feed sealed payload bytes with update(); finish with finalize(). Returns
    plaintext chunks, each released only after its own tag verified. Raises
    PayloadError; after an error the output so far must be discarded."""

    def __init__(self, payload_key: bytes) -> None:
        self._cipher = PayloadCipher(payload_key)
        self._counter = 0
        self._pending = b""  # at most one sealed chunk, which may be the final one
        self._done = False

    def update(self, data: Buffer) -> list[bytes]:
        if self._done:
            raise ValueError("decryptor already finalized")
        chunks, self._pending = _split_holding_last(self._pending, data, SEALED_CHUNK_SIZE)
        return [self._open(chunk, final=False) for chunk in chunks]

    def finalize(self) -> list[bytes]:
        if self._done:
            raise ValueError("decryptor already finalized")
        self._done = True
        if len(self._pending) < TAG_SIZE:
            raise PayloadError("payload truncated: no final chunk")
        last = self._open(self._pending, final=True)
        self._pending = b""
        if not last and self._counter > 1:
            raise PayloadError("payload ends with an empty final chunk")
        return [last]

    def _open(self, sealed: bytes | memoryview, final: bool) -> bytes:
        plaintext = self._cipher.open(self._counter, sealed, final)
        self._counter += 1
        return plaintext
