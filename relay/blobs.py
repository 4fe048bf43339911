"""Sealed blob files on disk: a blob is visible under its name whole, or not at all.

Rules:
- A blob is written to `.tmp-<random>` in the directory it will live in, fsynced, renamed
  onto its name (atomic within one directory), and the directory is fsynced so that the
  rename itself survives a power cut. A reader therefore never sees a half-written blob.
- Any failure before the rename, cancellation included, unlinks the temporary file. Only a
  crash (SIGKILL, power) can leave one behind; `sweep_temporaries()` at start-up removes
  them. Names starting with "." are reserved for this: no path segment may start with one.
- A blob path is "/"-separated segments of [A-Za-z0-9._-]; anything else is a ValueError
  before the disk is touched, so no name can climb out of the root or look like a
  temporary. Writing a name that exists replaces it atomically: callers choose unique names.
- Directories are created 0700 and files 0600. The blobs are sealed, but which drops exist,
  how large and when, is still nobody else's business on a shared host.
- Blocking file work runs in worker threads, in hops of about 1 MiB (one `to_thread` per
  MiB costs little next to the disk). A thread cannot be interrupted, so a cancelled
  operation waits for its thread before cleaning up: a file is never closed or unlinked
  under a write still in progress.
- Disk errors become `StoreError` carrying the system's reason only, never a path (paths
  hold drop ids). A missing blob is `NotFound`.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, ParamSpec, TypeVar

from .errors import NotFound, StoreError

PIECE_SIZE = 1 << 20  # what read_range yields, and how much a writer gathers per thread hop
TEMPORARY_PREFIX = ".tmp-"
_DIRECTORY_MODE = 0o700
_FILE_MODE = 0o600
_MAX_PATH_LENGTH = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")

_P = ParamSpec("_P")
_T = TypeVar("_T")


def check_relpath(relpath: str) -> tuple[str, ...]:
    """The segments of a valid blob path. Raises ValueError for an empty, absolute or
    too long path, an empty segment, a character outside [A-Za-z0-9._-], or a segment
    starting with "." ("." and ".." included)."""
    if not relpath or len(relpath) > _MAX_PATH_LENGTH:
        raise ValueError("blob path must be 1 to 1024 characters")
    segments = tuple(relpath.split("/"))
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or segment.startswith("."):
            raise ValueError(
                "blob path must be '/'-separated segments of [A-Za-z0-9._-], "
                "none empty and none starting with '.'"
            )
    return segments


class BlobStore:
    """Blob files under one root directory. Safe to share between tasks, as long as two
    tasks do not write the same path at once (the last rename would win)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def _path(self, relpath: str) -> Path:
        return self._root.joinpath(*check_relpath(relpath))

    async def write(
        self, relpath: str, pieces: AsyncIterable[bytes] | Iterable[bytes]
    ) -> tuple[int, str]:
        """Writes `pieces` as the blob `relpath` and returns (size, sha256 hex).

        Raises ValueError for a bad path, StoreError if the disk fails, and whatever the
        iterator raises; in every failure case nothing is left under `relpath` or in a
        temporary file."""
        async with self.open_writer(relpath) as writer:
            if isinstance(pieces, AsyncIterable):
                async for piece in pieces:
                    await writer.write(piece)
            else:
                for piece in pieces:
                    await writer.write(piece)
            return await writer.commit()

    def open_writer(self, relpath: str) -> BlobWriter:
        """A writer for callers that push pieces. Raises ValueError for a bad path. Nothing
        touches the disk until the first piece is flushed or `commit()` is called."""
        return BlobWriter(self._root, check_relpath(relpath))

    async def read_range(
        self, relpath: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Yields bytes [start, end) of the blob in pieces of at most 1 MiB; `end=None`
        reads to the end of the file. A caller that stops early
        should `aclose()` it (or use `contextlib.aclosing`) to release the file at once.

        Like slicing bytes: `end` past the end of the blob reads to the end, and `start`
        at or past the end yields nothing (the caller answers 416 from `size()`). Raises,
        on first iteration, ValueError for a bad path or a negative or inverted range,
        NotFound for a missing blob, StoreError if the disk fails."""
        path = self._path(relpath)
        if start < 0 or (end is not None and end < start):
            raise ValueError("blob range must satisfy 0 <= start <= end")
        with _disk_errors("read blob", missing_is_not_found=True):
            file = await _in_thread(_open_for_reading, path, start)
        try:
            remaining = None if end is None else end - start
            while remaining is None or remaining > 0:
                want = PIECE_SIZE if remaining is None else min(PIECE_SIZE, remaining)
                with _disk_errors("read blob"):
                    piece = await _in_thread(_read_exactly, file, want)
                if not piece:
                    return
                if remaining is not None:
                    remaining -= len(piece)
                yield piece
        finally:
            # Closing a file opened for reading does not wait on the disk, and this may
            # run when the generator is collected, where no await is possible.
            file.close()

    async def size(self, relpath: str) -> int:
        """The size of a blob in bytes. Raises ValueError for a bad path, NotFound if it
        does not exist, StoreError if the disk fails."""
        path = self._path(relpath)
        with _disk_errors("read blob", missing_is_not_found=True):
            status = await _in_thread(os.stat, path)
        return status.st_size

    async def delete(self, relpath: str) -> None:
        """Unlinks a blob, then its directory if that is now empty (never the root). A
        missing blob is not an error. Raises ValueError for a bad path, StoreError if the
        disk fails."""
        path = self._path(relpath)
        with _disk_errors("delete blob"):
            await _in_thread(_delete_file, self._root, path)

    async def delete_tree(self, prefix: str) -> None:
        """Removes a directory of blobs and everything in it. A missing directory is not
        an error. Raises ValueError for a bad path, StoreError if the disk fails."""
        path = self._path(prefix)
        with _disk_errors("delete blobs"):
            await _in_thread(_delete_tree, path)

    def sweep_temporaries(self) -> int:
        """Unlinks every temporary file a crash left behind and returns how many. Call it
        at start-up only, before anything writes: it cannot tell a live writer's file
        from a dead one's. Raises StoreError if the disk fails."""
        removed = 0
        try:
            for directory, _subdirectories, files in os.walk(self._root, onerror=_raise):
                for name in files:
                    if name.startswith(TEMPORARY_PREFIX):
                        _unlink_missing_ok(Path(directory, name))
                        removed += 1
        except FileNotFoundError:
            return removed  # no root yet: nothing was ever written
        except OSError as exc:
            raise StoreError(f"failed to sweep temporary blobs: {exc.strerror}") from exc
        return removed


class _HashingFile:
    """The file a `write_file` callback writes to: counts and hashes what passes."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size = 0
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def writelines(self, pieces: Iterable[bytes]) -> None:
        for piece in pieces:
            self.write(piece)


def write_file(root: Path, relpath: str, fill: Callable[[BinaryIO], _T]) -> tuple[_T, int, str]:
    """Blocking, for worker threads: writes the blob `relpath` by calling `fill(file)`,
    with the same guarantees as `BlobStore.write` (temporary name, fsync, rename, fsync
    of the directory; nothing visible on failure). Returns (fill's result, size, sha256 of
    the bytes written). Raises ValueError for a bad path, and whatever `fill` raises."""
    segments = check_relpath(relpath)
    temporary, descriptor = _create_temporary(root, segments[:-1])
    try:
        with os.fdopen(descriptor, "wb") as file:
            hashing = _HashingFile(file)
            result = fill(hashing)  # type: ignore[arg-type]
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, temporary.parent / segments[-1])
    except BaseException:
        _unlink_missing_ok(temporary)
        raise
    _fsync_directory(temporary.parent)
    return result, hashing.size, hashing.hash.hexdigest()


def move_in(root: Path, relpath: str, path: Path) -> None:
    """Blocking: makes the finished file at `path` (on the same file system) the blob
    `relpath`, with `write_file`'s guarantees: fsynced before it is renamed onto its name,
    the directory fsynced after. Raises ValueError for a bad path, OSError if the file
    cannot be moved (another file system: EXDEV); then nothing has changed."""
    segments = check_relpath(relpath)
    directory = _make_directories(root, segments[:-1])
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(path, directory / segments[-1])
    _fsync_directory(directory)


def delete_tree(root: Path, prefix: str) -> None:
    """Blocking: `BlobStore.delete_tree` for worker threads."""
    _delete_tree(root.joinpath(*check_relpath(prefix)))


class BlobWriter:
    """Pushes pieces into one blob. `write()` as often as needed, then `commit()` to
    publish it or `abort()` to discard it. As `async with`, leaving the block without a
    commit (by an exception or not) aborts: nothing is published implicitly. Use it from
    one task at a time."""

    def __init__(self, root: Path, segments: tuple[str, ...]) -> None:
        self._root = root
        self._directories = segments[:-1]
        self._target = root.joinpath(*segments)
        self._temporary: Path | None = None
        self._file: BinaryIO | None = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._size = 0
        self._hash = hashlib.sha256()
        self._done = False

    async def __aenter__(self) -> BlobWriter:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._done:
            return
        if exc is None:
            await self.abort()
            return
        try:
            await self.abort()
        except StoreError:
            pass  # the first error matters more; sweep_temporaries() will find the file

    async def write(self, data: bytes) -> None:
        """Adds `data` to the blob. Raises ValueError after commit or abort, StoreError if
        the disk fails (the writer is then aborted)."""
        if self._done:
            raise ValueError("blob writer is closed")
        if not data:
            return
        self._pending.append(data)
        self._pending_size += len(data)
        self._size += len(data)
        if self._pending_size >= PIECE_SIZE:
            await self._flush()

    async def commit(self) -> tuple[int, str]:
        """Makes the blob visible under its name, durably, and returns (size, sha256 hex).
        Raises ValueError after commit or abort, StoreError if the disk fails (the writer
        is then aborted and nothing is published)."""
        if self._done:
            raise ValueError("blob writer is closed")
        await self._flush()
        await self._guarded("write blob", self._publish)
        return self._size, self._hash.hexdigest()

    async def abort(self) -> None:
        """Discards everything written. Idempotent; does nothing after a commit. Raises
        StoreError if the temporary file cannot be removed."""
        if self._done:
            return
        self._done = True
        self._pending.clear()
        with _disk_errors("discard blob"):
            await _in_thread(self._discard)

    async def _flush(self) -> None:
        pieces, self._pending, self._pending_size = self._pending, [], 0
        await self._guarded("write blob", self._append, pieces)

    async def _guarded(
        self, action: str, function: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        try:
            with _disk_errors(action):
                await _in_thread(function, *args, **kwargs)
        except BaseException:
            await self.abort()
            raise

    # The methods below run in a worker thread, one at a time.

    def _append(self, pieces: list[bytes]) -> None:
        file = self._file or self._create()
        for piece in pieces:
            self._hash.update(piece)  # hashlib releases the GIL for large pieces
        file.writelines(pieces)

    def _create(self) -> BinaryIO:
        self._temporary, descriptor = _create_temporary(self._root, self._directories)
        self._file = os.fdopen(descriptor, "wb")
        return self._file

    def _publish(self) -> None:
        file = self._file or self._create()  # an empty blob still gets its file
        file.flush()
        os.fsync(file.fileno())
        file.close()
        self._file = None
        if self._temporary is None:
            raise RuntimeError("blob writer lost its temporary file")  # unreachable
        os.replace(self._temporary, self._target)
        # From here the blob is complete and visible: an abort must not touch it.
        self._temporary = None
        self._done = True
        _fsync_directory(self._target.parent)

    def _discard(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # flushing the last buffered bytes failed; they are being thrown away
            self._file = None
        if self._temporary is not None:
            _unlink_missing_ok(self._temporary)
            self._temporary = None


async def _in_thread(function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Runs blocking file work in a thread. If the caller is cancelled, waits for the
    thread to finish before letting the cancellation through."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait([task])
            except asyncio.CancelledError:
                continue  # still cancelling; the one CancelledError is raised below
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it as lost
        raise


@contextmanager
def _disk_errors(action: str, *, missing_is_not_found: bool = False) -> Iterator[None]:
    """Translates OSError into StoreError with the system's reason and no path."""
    try:
        yield
    except FileNotFoundError as exc:
        if missing_is_not_found:
            raise NotFound("no such blob") from exc
        raise StoreError(f"failed to {action}: {exc.strerror or 'not found'}") from exc
    except OSError as exc:
        raise StoreError(f"failed to {action}: {exc.strerror or type(exc).__name__}") from exc


def _create_temporary(root: Path, directories: tuple[str, ...]) -> tuple[Path, int]:
    """A new temporary file, 0600, in the directory `directories` under `root` (made as
    needed): its path, and a descriptor open for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    directory = _make_directories(root, directories)
    temporary = directory / f"{TEMPORARY_PREFIX}{secrets.token_hex(8)}"
    try:
        descriptor = os.open(temporary, flags, _FILE_MODE)
    except FileNotFoundError:
        # delete() of a sibling removed the directory while it was still empty.
        _make_directories(root, directories)
        descriptor = os.open(temporary, flags, _FILE_MODE)
    os.fchmod(descriptor, _FILE_MODE)  # the mode given to open() is filtered by umask
    return temporary, descriptor


def _make_directories(root: Path, segments: tuple[str, ...]) -> Path:
    if not root.is_dir():
        root.parent.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
        _make_directory(root)
    directory = root
    for segment in segments:
        directory = directory / segment
        _make_directory(directory)
    return directory


def _make_directory(path: Path) -> None:
    try:
        os.mkdir(path, _DIRECTORY_MODE)
    except FileExistsError:
        return
    os.chmod(path, _DIRECTORY_MODE)  # mkdir's mode is filtered by umask
    # The new entry must reach the disk too, or a blob renamed into it could vanish with it.
    _fsync_directory(path.parent)


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _open_for_reading(path: Path, start: int) -> BinaryIO:
    file = open(path, "rb", buffering=0)  # closed by read_range
    try:
        file.seek(start)
    except BaseException:
        file.close()
        raise
    return file


def _read_exactly(file: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, fewer only at the end of the file (a raw read may stop short)."""
    pieces: list[bytes] = []
    wanted = size
    while wanted > 0:
        piece = file.read(wanted)
        if not piece:
            break
        pieces.append(piece)
        wanted -= len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _delete_file(root: Path, path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    directory = path.parent
    if directory == root:
        _fsync_directory(directory)
        return
    try:
        os.rmdir(directory)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return  # a concurrent delete took it
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        _fsync_directory(directory)  # other blobs remain: make the unlink durable instead
        return
    _fsync_directory(directory.parent)


def _delete_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    _fsync_directory(path.parent)


def _unlink_missing_ok(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _raise(error: OSError) -> None:
    raise error
