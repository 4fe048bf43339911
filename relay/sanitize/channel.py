"""The wire between the relay and a streaming worker: the worker asks for the input by
(offset, length) and sends the result back as it is written, over two Unix socket pairs.

Why: a demuxer must seek (an MP4's index is often at its end), and a copy of the whole file
in memory (a memfd) cost as much RAM as the file, twice with the result. Over this wire the
plaintext stays where it is (in the relay, a `staging.SealedReader` decrypting 64 KiB chunks
on demand), and the worker holds a few blocks of it at a time.

    input link    worker -> relay: requests, 12 bytes each (64-bit offset, 32-bit length)
                  relay -> worker: for each, a 32-bit length and that many bytes (fewer at
                  the end of the file, none past it), in the order asked
    result link   worker -> relay: the result, raw, until the worker closes it

Two links, so neither side waits for the other more than it must: the relay serves reads in
one thread and takes the result in another, and the worker asks for the next block before
it needs it (measured on a 500 MB MP4, one link with one request at a time kept the worker
waiting 1.4 s of its 2.3).

When the input is a file of the caller's own (amanah-drop strip on a source's device), the
worker reads it through a read-only descriptor and only the result link is used; when the
result also goes to a file of the caller's own, the worker writes it there itself
(`FileLink`) and no link is used at all.

Every number from the worker is checked: a read larger than `MAX_READ`, or a result beyond
its limit, ends the job (`ProtocolError`, `OutputTooLarge`). When asked, the relay's side
also hashes the input, in order, from the reads it serves, and reads itself only what the
worker never asked for: the input is normally read once.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import socket
import struct
import threading
import time
from collections import OrderedDict, deque
from typing import BinaryIO, Protocol

REQUEST = struct.Struct(">QI")
LENGTH = struct.Struct(">I")
BLOCK = 1 << 20  # the worker's unit of reading, and the relay's of receiving
MAX_READ = 4 * BLOCK
CACHED_BLOCKS = 4  # enough for a demuxer that alternates between a few places
AHEAD = 1  # blocks asked for before they are needed


class ProtocolError(Exception):
    """The other side sent something that is not a message of this protocol."""


class OutputTooLarge(Exception):
    """The worker's result went past the limit set for this input."""


class Writable(Protocol):
    def write(self, data: memoryview, /) -> object: ...


def _receive_bytes(sock: socket.socket, count: int) -> bytes:
    """Exactly `count` bytes, as one bytes object when the socket gives them at once (as a
    blocking Unix socket does with MSG_WAITALL): PyAV wants bytes, and copying each block
    out of a bytearray cost as much as the socket itself. Raises ProtocolError at an end of
    stream before `count` bytes."""
    data = sock.recv(count, socket.MSG_WAITALL) if count else b""
    while len(data) < count:
        more = sock.recv(count - len(data), socket.MSG_WAITALL)
        if not more:
            raise ProtocolError("the link closed in a message")
        data += more
    return data


class _InOrderDigest:
    """SHA-256 of the input, fed with the pieces served in whatever order the worker asked
    for them: a piece that continues the hashed prefix extends it; the rest is read at the
    end (`finish`). The hashing runs in a thread of its own (hashlib releases the GIL), so
    it overlaps serving the next read: at most `QUEUED` pieces wait for it."""

    QUEUED = 8

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.hashed = 0  # bytes of the prefix handed to the thread
        self._pieces: queue.Queue[bytes | None] = queue.Queue(self.QUEUED)
        self._thread: threading.Thread | None = None

    def feed(self, offset: int, data: bytes) -> None:
        if offset <= self.hashed < offset + len(data):
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()
            self._pieces.put(data[self.hashed - offset :])
            self.hashed = offset + len(data)

    def _run(self) -> None:
        while (piece := self._pieces.get()) is not None:
            self._hash.update(piece)

    def finish(self, src: BinaryIO, size: int) -> str:
        if self._thread is not None:
            self._pieces.put(None)
            self._thread.join()
        src.seek(self.hashed)
        while self.hashed < size and (block := src.read(min(BLOCK, size - self.hashed))):
            self._hash.update(block)
            self.hashed += len(block)
        return self._hash.hexdigest()


def _hang_up(sock: socket.socket) -> None:
    """Ends a link both ways; unlike close(), this also wakes a thread blocked on it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed or shut down


class _ResultReceiver:
    """The relay's thread that takes the result as it comes and writes it to `dst`."""

    def __init__(self, sock: socket.socket, dst: Writable, deadline: float, limit: int) -> None:
        self._sock = sock
        self._dst = dst
        self._deadline = deadline
        self._limit = limit
        self.written = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buffer = memoryview(bytearray(BLOCK))
        try:
            while True:
                self._sock.settimeout(max(0.001, self._deadline - time.monotonic()))
                count = self._sock.recv_into(buffer)
                if count == 0:
                    return
                self.written += count
                if self.written > self._limit:
                    raise OutputTooLarge("result too large")
                self._dst.write(buffer[:count])
        except BaseException as exc:  # noqa: BLE001 - raised again by `finish`
            self.error = exc
            _hang_up(self._sock)  # the worker's next write fails: it stops

    def stop(self) -> None:
        """Ends the thread without waiting for the result (the job failed elsewhere)."""
        _hang_up(self._sock)
        self._thread.join()

    def finish(self) -> int:
        """Waits for the end of the result; returns its size. Raises what the thread met."""
        self._thread.join(max(0.0, self._deadline - time.monotonic()))
        if self._thread.is_alive():
            _hang_up(self._sock)
            self._thread.join()
            raise TimeoutError("the result did not end in time")
        if self.error is not None:
            raise self.error
        return self.written


def serve(
    requests: socket.socket | None,
    results: socket.socket,
    src: BinaryIO,
    size: int,
    dst: Writable,
    deadline: float,
    max_output: int,
    hashed: bool = True,
) -> tuple[str, int]:
    """Serves one worker until it closes its links: reads from `src` (seekable, `size`
    bytes) over `requests`, result bytes from `results` to `dst`. Without `requests` the
    worker reads the input itself (a file of the caller's, `sandbox.py`), and this only
    hashes it meanwhile. Returns (SHA-256 of the input, "" unless `hashed`; bytes of
    result). Raises TimeoutError at `deadline` (time.monotonic), ProtocolError,
    OutputTooLarge, and whatever `src` or `dst` raise."""
    receiver = _ResultReceiver(results, dst, deadline, max_output)
    try:
        digest = _InOrderDigest() if hashed else None
        if requests is not None:
            _serve_reads(requests, src, size, deadline, digest)
        sha256 = digest.finish(src, size) if digest is not None else ""
    except BaseException:
        receiver.stop()
        raise
    return sha256, receiver.finish()


def digest_of(src: BinaryIO, size: int) -> str:
    """SHA-256 of the first `size` bytes of `src`, read from its start."""
    return _InOrderDigest().finish(src, size)


def _serve_reads(
    sock: socket.socket,
    src: BinaryIO,
    size: int,
    deadline: float,
    digest: _InOrderDigest | None,
) -> None:
    while True:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            first = sock.recv(REQUEST.size, socket.MSG_WAITALL)
        except ConnectionResetError:
            first = b""  # closed with an answer unread: a block asked ahead, or a crash
        if not first:
            return  # the worker's verdict says which
        offset, length = REQUEST.unpack(first + _receive_bytes(sock, REQUEST.size - len(first)))
        if length > MAX_READ:
            raise ProtocolError("read too large")
        data = b""
        if offset < size:
            src.seek(offset)
            data = src.read(min(length, size - offset))
        try:
            sock.sendall(LENGTH.pack(len(data)))
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return  # the worker is done (a block asked ahead goes unread) or gone
        if digest is not None:
            digest.feed(offset, data)  # after answering: hashing overlaps the worker's work


class SeekableInput:
    """A read-only, seekable file object of `_size` bytes, as PyAV reads one; a subclass
    reads from `_position` (`_wanted` says how much)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._position, self._size)[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def _wanted(self, size: int) -> int:
        """How many bytes a read of `size` (negative: all) takes from the position."""
        remaining = self._size - self._position
        return remaining if size < 0 else min(size, remaining)


class RemoteInput(SeekableInput):
    """The worker's view of the input: a read-only, seekable file object whose reads are
    requests to the relay, one `BLOCK` at a time, the next one asked for ahead while the
    reads go forward, and the last few kept."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        super().__init__(size)
        self._sock = sock
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._asked: deque[int] = deque()  # blocks requested, not yet received
        self.received = 0  # bytes, for the measurements

    def read(self, size: int = -1) -> bytes:
        """At most `size` bytes from the current position (fewer at a block's end)."""
        size = self._wanted(size)
        if size <= 0:
            return b""
        index, within = divmod(self._position, BLOCK)
        block = self._block(index)
        data = block[within : within + size]
        if not data:
            raise ProtocolError("the relay sent less than the input's size")
        self._position += len(data)
        return data

    def _block(self, index: int) -> bytes:
        while index not in self._blocks:
            if index not in self._asked:
                self._ask(index)
            self._take()
        self._blocks.move_to_end(index)
        for ahead in range(index + 1, index + 1 + AHEAD):
            if ahead * BLOCK < self._size and ahead not in self._blocks:
                if ahead not in self._asked:
                    self._ask(ahead)
        return self._blocks[index]

    def _ask(self, index: int) -> None:
        self._sock.sendall(REQUEST.pack(index * BLOCK, BLOCK))
        self._asked.append(index)

    def _take(self) -> None:
        """Receives the answer to the oldest request."""
        index = self._asked.popleft()
        (count,) = LENGTH.unpack(_receive_bytes(self._sock, LENGTH.size))
        if count > BLOCK:
            raise ProtocolError("answer too large")
        self._blocks[index] = _receive_bytes(self._sock, count)
        self.received += count
        while len(self._blocks) > CACHED_BLOCKS:
            self._blocks.popitem(last=False)


class Result(Protocol):
    """Where the worker writes its result: `ResultLink` or `FileLink`."""

    written: int  # bytes so far

    def write(self, data: bytes | memoryview, /) -> int: ...


class ResultLink:
    """The worker's end for the result: `write` sends each piece to the relay as it comes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.written = 0

    def write(self, data: bytes | memoryview) -> int:
        self._sock.sendall(data)
        self.written += len(data)
        return len(data)


class FileLink:
    """The worker's end for a result that goes straight into a file of the caller's own
    (amanah-drop strip writing to the source's folder): written at the descriptor's shared
    offset; the worker's limit on file size (worker.limit_resources) bounds it, and
    `too_large` says whether a write met that limit (FFmpeg may swallow the error)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.written = 0
        self.too_large = False

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            self.too_large = self.too_large or exc.errno == errno.EFBIG
            raise
        self.written += len(data)
        return len(data)
