"""BlobStore against a real directory: round trips, ranges, failure cleanup, permissions,
and a writer killed with SIGKILL in the middle of a blob."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from relay.blobs import PIECE_SIZE, TEMPORARY_PREFIX, BlobStore, write_file
from relay.errors import NotFound

MIB = 1 << 20


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


def data_of(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def collect(blobs: BlobStore, relpath: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([piece async for piece in blobs.read_range(relpath, start, end)])


async def async_pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for position in range(0, len(data), size):
        yield data[position : position + size]
        await asyncio.sleep(0)


# Round trips


@pytest.mark.parametrize("size", [0, 1, 1000, MIB - 1, MIB, MIB + 1, 3 * MIB + 5])
async def test_round_trip_from_async_iterator(blobs: BlobStore, size: int) -> None:
    data = data_of(size)
    written = await blobs.write("drops/d1/0", async_pieces(data, 100_000))
    assert written == (size, hashlib.sha256(data).hexdigest())
    assert await blobs.size("drops/d1/0") == size
    assert await collect(blobs, "drops/d1/0") == data
    assert files_under(blobs.root) == ["drops/d1/0"]


async def test_round_trip_from_plain_iterable(blobs: BlobStore) -> None:
    pieces = [b"one ", b"", b"two ", b"three"]
    size, digest = await blobs.write("a", pieces)
    assert (size, digest) == (13, hashlib.sha256(b"one two three").hexdigest())
    assert await collect(blobs, "a") == b"one two three"


async def test_streaming_writer_round_trip(blobs: BlobStore) -> None:
    data = data_of(2 * MIB + 333)
    async with blobs.open_writer("drops/d2/photo") as writer:
        for position in range(0, len(data), 7_000):
            await writer.write(data[position : position + 7_000])
        assert await writer.commit() == (len(data), hashlib.sha256(data).hexdigest())
    assert await collect(blobs, "drops/d2/photo") == data


async def test_writer_refuses_use_after_commit(blobs: BlobStore) -> None:
    writer = blobs.open_writer("x")
    await writer.write(b"abc")
    await writer.commit()
    with pytest.raises(ValueError, match="closed"):
        await writer.write(b"more")
    with pytest.raises(ValueError, match="closed"):
        await writer.commit()
    await writer.abort()  # a no-op after commit: the blob stays
    assert await collect(blobs, "x") == b"abc"


async def test_writing_an_existing_name_replaces_it_whole(blobs: BlobStore) -> None:
    await blobs.write("x", [b"old contents"])
    await blobs.write("x", [b"new"])
    assert await collect(blobs, "x") == b"new"
    assert files_under(blobs.root) == ["x"]


def test_write_file_from_a_worker_thread(tmp_path: Path) -> None:
    """The blocking form: `fill` writes into the file, its result comes back with the size
    and SHA-256 of what it wrote; private whatever the umask; a failing `fill` leaves
    nothing, and a bad path is refused before the disk is touched."""
    root = tmp_path / "blobs"
    data = data_of(MIB + 7)

    def fill(file: BinaryIO) -> str:
        file.write(data[:5])
        file.writelines([data[5:MIB], data[MIB:]])
        return "filled"

    previous = os.umask(0)
    try:
        assert write_file(root, "drops/d1/0", fill) == (
            "filled",
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
    finally:
        os.umask(previous)
    assert (root / "drops/d1/0").read_bytes() == data
    assert stat.S_IMODE((root / "drops/d1/0").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "drops/d1").stat().st_mode) == 0o700

    def failing(file: BinaryIO) -> None:
        file.write(data)
        raise RuntimeError("the sanitizer refused")

    with pytest.raises(RuntimeError, match="refused"):
        write_file(root, "drops/d1/1", failing)
    assert files_under(root) == ["drops/d1/0"]
    for relpath in ("../x", "drops/.tmp-1"):
        with pytest.raises(ValueError, match="blob path"):
            write_file(root, relpath, fill)
    assert files_under(root) == ["drops/d1/0"]


# Ranges


async def test_range_reads_at_the_edges(blobs: BlobStore) -> None:
    data = data_of(3 * MIB + 10)
    size = len(data)
    await blobs.write("r", [data])
    assert await collect(blobs, "r", 0, 1) == data[:1]
    assert await collect(blobs, "r", 0, 0) == b""
    assert await collect(blobs, "r", size - 1) == data[-1:]
    assert await collect(blobs, "r", size - 1, size) == data[-1:]
    assert await collect(blobs, "r", MIB - 3, MIB + 3) == data[MIB - 3 : MIB + 3]
    assert await collect(blobs, "r", 5, 2 * MIB + 7) == data[5 : 2 * MIB + 7]
    # Like slicing: an end past the blob reads to its end, a start at or past it gives nothing.
    assert await collect(blobs, "r", size - 2, size + 100) == data[-2:]
    assert await collect(blobs, "r", size) == b""
    assert await collect(blobs, "r", size + 5, size + 10) == b""


async def test_range_pieces_are_at_most_one_mib(blobs: BlobStore) -> None:
    data = data_of(2 * MIB + 10)
    await blobs.write("r", [data])
    sizes = [len(piece) async for piece in blobs.read_range("r", 3, None)]
    assert sizes == [PIECE_SIZE, PIECE_SIZE, 7]


@pytest.mark.parametrize(("start", "end"), [(-1, None), (-1, 5), (5, 4)])
async def test_bad_ranges_are_refused(blobs: BlobStore, start: int, end: int | None) -> None:
    await blobs.write("r", [b"0123456789"])
    with pytest.raises(ValueError, match="range"):
        await collect(blobs, "r", start, end)


async def test_missing_blob_is_not_found(blobs: BlobStore) -> None:
    with pytest.raises(NotFound):
        await blobs.size("drops/none/0")
    with pytest.raises(NotFound):
        await collect(blobs, "drops/none/0")
    await blobs.write("drops/d/0", [b"x"])
    with pytest.raises(NotFound):
        await blobs.size("drops/d/1")


async def test_reader_closed_early_releases_the_file(blobs: BlobStore) -> None:
    await blobs.write("r", [data_of(3 * MIB)])
    reader = blobs.read_range("r", 0, None)
    assert len(await anext(reader)) == PIECE_SIZE
    await reader.aclose()  # no ResourceWarning (warnings are errors in this suite)


# Failures leave nothing behind


async def test_abort_leaves_nothing(blobs: BlobStore) -> None:
    writer = blobs.open_writer("drops/d3/0")
    await writer.write(data_of(2 * MIB))  # flushed: a temporary file exists now
    assert any(name.startswith(TEMPORARY_PREFIX) for name in os.listdir(blobs.root / "drops/d3"))
    await writer.abort()
    await writer.abort()  # idempotent
    assert files_under(blobs.root) == []
    with pytest.raises(ValueError, match="closed"):
        await writer.write(b"x")


async def test_leaving_the_block_without_commit_publishes_nothing(blobs: BlobStore) -> None:
    async with blobs.open_writer("drops/d3/0") as writer:
        await writer.write(data_of(2 * MIB))
    assert files_under(blobs.root) == []


async def test_exception_in_the_block_aborts(blobs: BlobStore) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with blobs.open_writer("drops/d3/0") as writer:
            await writer.write(data_of(2 * MIB))
            raise RuntimeError("boom")
    assert files_under(blobs.root) == []


async def test_exception_in_the_async_iterator_leaves_nothing(blobs: BlobStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield data_of(MIB)
        raise ConnectionResetError("source went away")

    with pytest.raises(ConnectionResetError):
        await blobs.write("drops/d4/0", failing())
    assert files_under(blobs.root) == []


async def test_exception_in_a_plain_iterator_leaves_nothing(blobs: BlobStore) -> None:
    def failing() -> Iterator[bytes]:
        yield data_of(2 * MIB)
        raise ValueError("bad piece")

    with pytest.raises(ValueError, match="bad piece"):
        await blobs.write("drops/d4/0", failing())
    assert files_under(blobs.root) == []


async def test_cancellation_leaves_nothing(blobs: BlobStore) -> None:
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        for index in range(1000):
            yield data_of(MIB)
            if index == 2:
                started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(blobs.write("drops/d5/0", slow()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(blobs.root) == []


async def test_earlier_blob_survives_a_failed_rewrite(blobs: BlobStore) -> None:
    await blobs.write("x", [b"complete"])

    async def failing() -> AsyncIterator[bytes]:
        yield data_of(2 * MIB)
        raise OSError("network")

    with pytest.raises(OSError, match="network"):
        await blobs.write("x", failing())
    assert await collect(blobs, "x") == b"complete"
    assert files_under(blobs.root) == ["x"]


# Paths

BAD_PATHS = [
    "",
    "/etc/passwd",
    "/abs",
    "..",
    ".",
    "a/../b",
    "a/./b",
    "../x",
    "a//b",
    "a/",
    "/a",
    ".tmp-0011",
    "d/.tmp-0011",
    ".hidden",
    "a\\b",
    "a b",
    "caf\u00e9",
    "a\nb",
    "a\x00b",
    "x" * 256,
    "/".join(["x"] * 600),
]


@pytest.mark.parametrize("relpath", BAD_PATHS)
async def test_bad_paths_are_refused(blobs: BlobStore, relpath: str) -> None:
    with pytest.raises(ValueError, match="blob path"):
        await blobs.write(relpath, [b"x"])
    with pytest.raises(ValueError, match="blob path"):
        blobs.open_writer(relpath)
    with pytest.raises(ValueError, match="blob path"):
        await blobs.size(relpath)
    with pytest.raises(ValueError, match="blob path"):
        await collect(blobs, relpath)
    with pytest.raises(ValueError, match="blob path"):
        await blobs.delete(relpath)
    with pytest.raises(ValueError, match="blob path"):
        await blobs.delete_tree(relpath)
    assert not blobs.root.exists()


async def test_good_paths_are_accepted(blobs: BlobStore) -> None:
    for relpath in ["a", "A-z_0.9", "drops/2024-01-01/x.age", "a.b/c..d/e-"]:
        await blobs.write(relpath, [b"x"])
        assert await blobs.size(relpath) == 1


# Deleting


async def test_delete_removes_the_file_and_its_empty_directory(blobs: BlobStore) -> None:
    await blobs.write("drops/d1/0", [b"a"])
    await blobs.write("drops/d1/1", [b"b"])
    await blobs.delete("drops/d1/0")
    assert files_under(blobs.root) == ["drops/d1/1"]
    await blobs.delete("drops/d1/1")
    assert not (blobs.root / "drops/d1").exists()
    assert (blobs.root / "drops").is_dir()  # only the immediate parent goes
    await blobs.delete("drops/d1/1")  # missing: not an error
    await blobs.delete("nothing/here")


async def test_delete_never_removes_the_root(blobs: BlobStore) -> None:
    await blobs.write("top", [b"x"])
    await blobs.delete("top")
    assert blobs.root.is_dir()


async def test_delete_tree(blobs: BlobStore) -> None:
    await blobs.write("replies/s1/r1", [b"a"])
    await blobs.write("replies/s1/r2", [b"b"])
    await blobs.write("replies/s2/r3", [b"c"])
    await blobs.delete_tree("replies/s1")
    assert files_under(blobs.root) == ["replies/s2/r3"]
    await blobs.delete_tree("replies/s1")  # missing: not an error


# Sweeping


async def test_sweep_removes_temporaries_only(blobs: BlobStore) -> None:
    await blobs.write("drops/d1/0", [b"keep"])
    await blobs.write("top", [b"keep"])
    for leftover in [".tmp-aa", "drops/.tmp-bb", "drops/d1/.tmp-cc", "drops/d9/.tmp-dd"]:
        path = blobs.root / leftover
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    assert blobs.sweep_temporaries() == 4
    assert files_under(blobs.root) == ["drops/d1/0", "top"]
    assert blobs.sweep_temporaries() == 0


def test_sweep_without_a_root(tmp_path: Path) -> None:
    assert BlobStore(tmp_path / "never-created").sweep_temporaries() == 0


# Permissions


async def test_permissions_are_private_whatever_the_umask(blobs: BlobStore) -> None:
    previous = os.umask(0)
    try:
        await blobs.write("drops/d1/0", [b"x"])
        writer = blobs.open_writer("drops/d2/0")
        await writer.write(data_of(2 * MIB))
        (temporary,) = (blobs.root / "drops/d2").iterdir()
        assert stat.S_IMODE(temporary.stat().st_mode) == 0o600
        await writer.abort()
    finally:
        os.umask(previous)
    for directory in [blobs.root, blobs.root / "drops", blobs.root / "drops/d1"]:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((blobs.root / "drops/d1/0").stat().st_mode) == 0o600


# A real crash

CHILD = """
import asyncio, sys
from pathlib import Path
from relay.blobs import BlobStore

async def slowly():
    for index in range(4096):
        yield bytes([index % 256]) * (1 << 20)
        await asyncio.sleep(0.02)

asyncio.run(BlobStore(Path(sys.argv[1])).write("drops/big/0", slowly()))
print("finished", flush=True)
"""


def test_sigkill_mid_write_leaves_only_a_temporary_that_sweep_removes(tmp_path: Path) -> None:
    root = tmp_path / "blobs"
    directory = root / "drops/big"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never wrote 4 MiB"
            temporaries = list(directory.glob(TEMPORARY_PREFIX + "*")) if directory.exists() else []
            if temporaries and temporaries[0].stat().st_size >= 4 * MIB:
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        stdout, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == -signal.SIGKILL
    assert b"finished" not in stdout
    assert not (directory / "0").exists()
    (leftover,) = directory.iterdir()
    assert leftover.name.startswith(TEMPORARY_PREFIX)
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o600

    assert BlobStore(root).sweep_temporaries() == 1
    assert list(directory.iterdir()) == []
