"""Staging: uploads in flight, sealed to a key that exists only in this process's RAM.

Rules:
- every byte a source sends is sealed (age) to the staging key before it reaches disk;
  the staging identity is generated at start-up and never written anywhere, so after a
  restart (or a seizure of the disk) staged files are noise, and `wipe()` removes them;
- a staged file is read back through `SealedReader`, a seekable, read-only file object
  that decrypts one 64 KiB chunk at a time: demuxers can seek (an MP4's index is often at
  its end) while no plaintext exists outside memory;
- `SealingWriter` is the other end: a write-only file object that seals what it is given
  to the final recipients (contact member keys) as it is written.

These are blocking file objects: call them from a worker thread, never the event loop.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from crypto.age import Encryptor, open_payload
from crypto.keys import Identity, Recipient
from crypto.stream import CHUNK_SIZE, SEALED_CHUNK_SIZE

_PREFIX_READ = 64 * 1024  # more than any staging header (one stanza) plus its nonce


class StagingArea:
    """The staging directory and the RAM-only key its files are sealed to."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._identity = Identity.generate()

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

    def create(self) -> StagedFile:
        path = self.directory / f"{secrets.token_hex(16)}.staged"
        return StagedFile(path, self._identity)


class StagedFile:
    """One upload being staged. `write()` seals and appends; `close()` finishes the seal.
    After close, `open()` gives the plaintext back, seekable."""

    def __init__(self, path: Path, identity: Identity) -> None:
        self.path = path
        self._identity = identity
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._encryptor: Encryptor | None = Encryptor([identity.recipient])
        self.size = 0

    def write(self, data: bytes) -> None:
        if self._file is None or self._encryptor is None:
            raise ValueError("staged file is closed")
        self._file.writelines(self._encryptor.update(data))
        self.size += len(data)

    def close(self) -> None:
        if self._file is None or self._encryptor is None:
            return
        self._file.writelines(self._encryptor.finalize())
        self._file.close()
        self._file = None
        self._encryptor = None

    def open(self) -> SealedReader:
        if self._file is not None:
            raise ValueError("staged file is still being written")
        return SealedReader(self.path, [self._identity])

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


class SealedReader(io.RawIOBase):
    """A seekable, read-only view of the plaintext of an age file on disk. Each read
    decrypts (and authenticates) only the chunks it touches. (RawIOBase's read, through
    readinto, is the fast one: measured, a read that joined the decrypted chunks took
    twice as long, its fresh allocations faulting pages.) The final chunk is checked
    when the reader opens, so the size is known and truncation is caught at once.
    Raises crypto.errors.AgeError subclasses from open and from reads."""

    def __init__(self, path: Path, identities: Iterable[Identity]) -> None:
        super().__init__()
        self._file = path.open("rb")
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
