"""Staging: uploads in flight, sealed to a key that exists only in this process's RAM.

Rules:
- every byte a source sends is sealed (age) to the staging key before it reaches disk;
  the staging identity is generated at start-up and never written anywhere, so after a
  restart (or a seizure of the disk) staged files are noise, and `wipe()` removes them;
- a staged file is read back through `SealedReader`, a seekable, read-only file object
  that decrypts one 64 KiB chunk at a time: demuxers can seek (an MP4's index is often at
  its end) while no plaintext exists outside memory;
- `SealingWriter` is the other end: a write-only file object that seals what it is given
  to the final recipients (contact member keys) as it is written;
- a file the relay will pass on as it was sent (a type its operator forwards unstripped)
  needs no reading back: `create(final=...)` seals it to the contacts' member keys as it
  arrives, not to the staging key, and hashes it on the way (plaintext and sealed bytes).
  The relay cannot open it again, and `ingest` moves it into the drop as it is: one pass
  over the bytes instead of two.

`StagedFile` is called from the event loop: it seals there and hands the writing and
hashing to one thread of its own (`_Writer`). `SealedReader` and `SealingWriter` are
blocking file objects: call them from a worker thread, never the event loop.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import queue
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from crypto.age import Encryptor, open_payload
from crypto.keys import Identity, Recipient
from crypto.stream import CHUNK_SIZE, SEALED_CHUNK_SIZE

_PREFIX_READ = 64 * 1024  # more than any staging header (one stanza) plus its nonce
# A file sealed to its contacts is fsynced when its drop is stored; asking the kernel to
# start writing it back every 16 MiB as it arrives leaves that fsync almost nothing to
# wait for (measured, 1 GiB: 0.40 s from the last byte to the receipt before, 0.04 after).
_WRITEBACK = 16 << 20


class StagingArea:
    """The staging directory and the RAM-only key its files are sealed to."""

    def __init__(self, directory: Path, destination: Path | None = None) -> None:
        """`destination`: where files sealed to their contacts on arrival are moved to
        (the blob root); only offered when it is on the same file system."""
        self.directory = directory
        self._destination = destination
        self._identity = Identity.generate()

    def seals_final(self) -> bool:
        """Whether `create(final=...)` may be used: a final file is moved, never copied
        (the relay cannot read it to copy it)."""
        if self._destination is None:
            return False
        try:
            here = self.directory.stat().st_dev
            there = self._destination.stat().st_dev
        except OSError:
            return False
        return here == there

    @property
    def recipient(self) -> Recipient:
        return self._identity.recipient

    def wipe(self) -> int:
        """Removes every staged file (unreadable since the key that sealed them is gone).
        Returns how many were removed."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        removed = 0
        for path in self.directory.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def create(self, final: Final | None = None) -> StagedFile:
        """A new staged file, sealed to the staging key; with `final`, sealed to its
        recipients instead and never readable here again."""
        path = self.directory / f"{secrets.token_hex(16)}.staged"
        return StagedFile(path, self._identity, final)


@dataclass(frozen=True)
class Final:
    """What a file sealed straight to its contacts is: its detected type (the relay cannot
    look again) and the member keys it is sealed to."""

    mime: str
    recipients: tuple[Recipient, ...]

    @property
    def key_set(self) -> frozenset[str]:
        return frozenset(str(r) for r in self.recipients)


class _Writer:
    """One thread, shared by every staged file of the process, that writes the sealed pieces
    to disk and hashes them (the plaintext of a file sealed to its contacts is hashed by
    the event loop, `StagedFile.write`): the event loop only reads, seals and hashes what
    it just read. A job joins its sealed pieces first, so it makes two calls that let go
    of the GIL (a hash, a write), not two per 64 KiB piece: each call must win the GIL back
    from the event loop, and with 33 of them per MiB this thread spent more time waiting
    for it than working (measured: the same 1 GiB upload took 3.43 s with one call per
    piece, 2.87 s joined, the join included). At most `QUEUED` jobs wait, whatever the
    number of uploads: a caller that finds the queue full waits (milliseconds: one job is
    1 MiB), which is also what slows a source down to the disk. The thread runs jobs in
    order, so a file's pieces are written in the order sealed."""

    QUEUED = 2

    def __init__(self) -> None:
        self._jobs: queue.Queue[Callable[[], None]] = queue.Queue(self.QUEUED)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="amanah-staging-writer", daemon=True
                )
                self._thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job()
            except BaseException:  # noqa: S112 - jobs keep their own errors; the thread goes on
                continue


_WRITER = _Writer()


class StagedFile:
    """One upload being staged. `write()` seals and appends; `close()` finishes the seal.
    After close, `open()` gives the plaintext back, seekable, unless the file is `final`
    (sealed to its contacts): then `plaintext_sha256`, `sealed_size` and `sealed_sha256`
    describe it instead.

    Called from one thread (the event loop); the writing itself happens in the writer
    thread. A disk error there is raised by the next `write()` or by `close()`."""

    def __init__(self, path: Path, identity: Identity, final: Final | None = None) -> None:
        self.path = path
        self.final = final
        self._identity = identity
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")  # the writer thread's from now on
        recipients = final.recipients if final is not None else (identity.recipient,)
        self._encryptor: Encryptor | None = Encryptor(recipients)
        self._plain = hashlib.sha256() if final is not None else None
        self._sealed = hashlib.sha256() if final is not None else None
        self._error: BaseException | None = None
        self._ended = False  # the file is closed (its last job done)
        self.size = 0
        self.sealed_size = 0
        self._flushed = 0

    def write(self, data: bytes) -> None:
        if self._encryptor is None:
            raise ValueError("staged file is closed")
        self._raise_error()
        pieces = self._encryptor.update(data)
        if self._plain is not None:
            # Hashed here, while the piece is in the cache the cipher just read it into:
            # measured on a 1 GiB upload, 2.35 s with the writer thread hashing it, 1.95 s
            # here (hashlib lets go of the GIL; the event loop waits ~0.6 ms per MiB).
            self._plain.update(data)
        self.size += len(data)
        _WRITER.submit(functools.partial(self._put, pieces))

    def _put(self, pieces: list[bytes]) -> None:
        """In the writer thread."""
        if self._error is not None or self._file is None:
            return
        try:
            sealed = b"".join(pieces)
            self._file.write(sealed)
            if self._sealed is not None:
                self._sealed.update(sealed)
            self.sealed_size += len(sealed)
            if self.final is not None and self.sealed_size - self._flushed >= _WRITEBACK:
                # On Linux, DONTNEED starts the writeback of dirty pages and returns; it
                # drops only clean ones.
                self._file.flush()
                os.posix_fadvise(self._file.fileno(), self._flushed, 0, os.POSIX_FADV_DONTNEED)
                self._flushed = self.sealed_size
        except BaseException as exc:  # raised again in the caller's thread
            self._error = exc

    def _end(self, pieces: list[bytes], done: threading.Event) -> None:
        """In the writer thread: the last pieces, then the file is closed."""
        try:
            self._put(pieces)
            if self._file is not None:
                self._file.close()
        except BaseException as exc:
            self._error = self._error or exc
        finally:
            self._file = None
            done.set()

    def _finish(self, pieces: list[bytes]) -> None:
        """Ends the file after every piece before `pieces`; waits for the writer."""
        self._encryptor = None
        done = threading.Event()
        _WRITER.submit(functools.partial(self._end, pieces, done))
        done.wait()
        self._ended = True

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._encryptor is None:
            return
        self._finish(self._encryptor.finalize())
        self._raise_error()

    @property
    def plaintext_sha256(self) -> str:
        return self._plain.hexdigest() if self._plain is not None else ""

    @property
    def sealed_sha256(self) -> str:
        return self._sealed.hexdigest() if self._sealed is not None else ""

    def open(self) -> SealedReader:
        if not self._ended:
            raise ValueError("staged file is still being written")
        if self.final is not None:
            raise ValueError("staged file is sealed to its contacts, not to the staging key")
        return SealedReader(self.path, [self._identity])

    def discard(self) -> None:
        if self._encryptor is not None:
            self._finish([])  # what is queued is written first: never unlinked under a write
        self.path.unlink(missing_ok=True)


class SealedReader(io.RawIOBase):
    """A seekable, read-only view of the plaintext of an age file on disk. Each read
    decrypts (and authenticates) only the chunks it touches. (RawIOBase's read, through
    readinto, is the fast one: measured, a read that joined the decrypted chunks took
    twice as long, its fresh allocations faulting pages.) The final chunk is checked
    when the reader opens, so the size is known and truncation is caught at once.
    Raises crypto.errors.AgeError subclasses from open and from reads."""

    def __init__(self, source: Path | BinaryIO, identities: Iterable[Identity]) -> None:
        """`source` is the age file's path, or the file itself (read from its start; it
        is closed with the reader)."""
        super().__init__()
        self._file = source.open("rb") if isinstance(source, Path) else source
        self._file.seek(0)
        try:
            self._offset, self._cipher = open_payload(self._file.read(_PREFIX_READ), identities)
            sealed_size = os.fstat(self._file.fileno()).st_size - self._offset
            self._chunks = max(1, -(-sealed_size // SEALED_CHUNK_SIZE))
            last = self._chunk(self._chunks - 1)
            self._size = (self._chunks - 1) * CHUNK_SIZE + len(last)
        except BaseException:
            self._file.close()
            raise
        self._position = 0
        self._cached: tuple[int, bytes] = (self._chunks - 1, last)

    @property
    def size(self) -> int:
        return self._size

    def _chunk(self, index: int) -> bytes:
        self._file.seek(self._offset + index * SEALED_CHUNK_SIZE)
        sealed = self._file.read(SEALED_CHUNK_SIZE)
        return self._cipher.open(index, sealed, index == self._chunks - 1)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        written = 0
        while written < len(view) and self._position < self._size:
            index, within = divmod(self._position, CHUNK_SIZE)
            if self._cached[0] != index:
                self._cached = (index, self._chunk(index))
            data = self._cached[1][within : within + len(view) - written]
            view[written : written + len(data)] = data
            written += len(data)
            self._position += len(data)
        return written

    def close(self) -> None:
        self._file.close()
        super().close()


class SealingWriter(io.RawIOBase):
    """A write-only file object that seals everything written to it to `recipients`
    and writes the age file to `sink`. `finish()` writes the final chunk."""

    def __init__(self, sink: BinaryIO, recipients: Iterable[Recipient]) -> None:
        super().__init__()
        self._sink = sink
        self._encryptor = Encryptor(recipients)
        self.plaintext_size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        """`data` is read during the call only (Encryptor.update copies what it keeps), so
        a caller may refill its buffer at once, and nothing is copied here first."""
        self._sink.writelines(self._encryptor.update(data))
        self.plaintext_size += len(data)
        return len(data)

    def finish(self) -> None:
        self._sink.writelines(self._encryptor.finalize())
