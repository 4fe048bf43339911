"""The wire between the relay and a streaming worker, both ends real (socket pairs, the
relay's side in a thread): reads anywhere give the file's bytes, the relay hashes the input
whatever the order of reads, and a worker that asks too much, writes too much or never
finishes is stopped."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import AgeError
from relay.sanitize import channel
from relay.staging import StagedFile, StagingArea


@contextmanager
def _served(
    data: bytes, limit: int = 1 << 30, timeout: float = 30.0
) -> Iterator[tuple[socket.socket, socket.socket, io.BytesIO, list[object]]]:
    """The worker's two ends, with `channel.serve` running on the relay's ends. After the
    block, the list holds serve's result or the exception it raised."""
    requests, their_requests = socket.socketpair()
    results, their_results = socket.socketpair()
    out, outcome = io.BytesIO(), list[object]()

    def serve() -> None:
        try:
            deadline = time.monotonic() + timeout
            outcome.append(
                channel.serve(requests, results, io.BytesIO(data), len(data), out, deadline, limit)
            )
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield their_requests, their_results, out, outcome
    finally:
        their_requests.close()
        their_results.close()
        thread.join(timeout + 5)
        requests.close()
        results.close()


def _wait_for(outcome: list[object]) -> None:
    deadline = time.monotonic() + 10
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.01)


DATA = os.urandom(3 * channel.BLOCK + 12345)


@settings(max_examples=25, deadline=None)
@given(
    moves=st.lists(
        st.tuples(st.integers(0, len(DATA) + 10), st.integers(0, 2 * channel.BLOCK)),
        min_size=1,
        max_size=12,
    )
)
def test_reads_anywhere_give_the_files_bytes(moves: list[tuple[int, int]]) -> None:
    with _served(DATA) as (requests, _, _, outcome):
        remote, local = channel.RemoteInput(requests, len(DATA)), io.BytesIO(DATA)
        for offset, size in moves:
            assert remote.seek(offset) == local.seek(offset)
            expected = local.read(size)
            got = b""
            while len(got) < len(expected):  # a read may stop at a block's end
                piece = remote.read(size - len(got))
                assert piece
                got += piece
            assert got == expected
            assert remote.tell() == local.tell()
    assert outcome and outcome[0] == (hashlib.sha256(DATA).hexdigest(), 0)


def test_the_relay_hashes_the_input_whatever_the_order_of_reads() -> None:
    with _served(DATA) as (requests, results, out, outcome):
        remote = channel.RemoteInput(requests, len(DATA))
        remote.seek(len(DATA) - 100)  # the index at the end first, as an MP4's
        assert len(remote.read(100)) == 100
        remote.seek(channel.BLOCK + 7)
        remote.read(1000)
        channel.ResultLink(results).write(b"result")
    assert isinstance(outcome[0], tuple)
    sha256, written = outcome[0]
    assert sha256 == hashlib.sha256(DATA).hexdigest() and written == 6
    assert out.getvalue() == b"result"


def test_a_read_too_large_ends_the_job() -> None:
    with _served(DATA) as (requests, _, _, outcome):
        requests.sendall(channel.REQUEST.pack(0, channel.MAX_READ + 1))
        _wait_for(outcome)
    assert isinstance(outcome[0], channel.ProtocolError)


def test_a_request_cut_short_ends_the_job() -> None:
    with _served(DATA) as (requests, _, _, outcome):
        requests.sendall(channel.REQUEST.pack(0, 10)[:5])
        requests.shutdown(socket.SHUT_WR)
        _wait_for(outcome)
    assert isinstance(outcome[0], channel.ProtocolError)


def test_a_result_past_its_limit_ends_the_job() -> None:
    with _served(DATA, limit=1000) as (_, results, out, outcome):
        with pytest.raises(OSError):
            for _ in range(100):
                results.sendall(b"x" * 4096)
    assert isinstance(outcome[0], channel.OutputTooLarge)
    assert len(out.getvalue()) <= 1000


def test_a_worker_that_never_ends_meets_the_deadline() -> None:
    with _served(DATA, timeout=0.3) as (requests, _, _, outcome):
        time.sleep(1.0)
    assert isinstance(outcome[0], TimeoutError)


def _answer(relay: socket.socket, data: bytes) -> None:
    """Sends `data` and ends the link, as a relay would; the worker may hang up first."""
    try:
        relay.sendall(data)
        relay.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the worker refused the answer before it all went


@pytest.mark.parametrize(
    "answer",
    [
        # more than asked, all of it sent: only the size check can refuse it
        lambda: channel.LENGTH.pack(channel.BLOCK + 1) + bytes(channel.BLOCK + 1),
        lambda: channel.LENGTH.pack(10) + b"short",  # then the link closes
    ],
)
def test_the_worker_refuses_a_relay_that_answers_wrong(answer: Callable[[], bytes]) -> None:
    relay, worker = socket.socketpair()
    with relay, worker:
        remote = channel.RemoteInput(worker, len(DATA))
        sender = threading.Thread(target=_answer, args=(relay, answer()))
        sender.start()  # a block is more than the socket holds: sent while the worker reads
        try:
            with pytest.raises(channel.ProtocolError):
                remote.read(10)
        finally:
            worker.close()  # a sender still blocked fails and ends
            sender.join()


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StagedFile, bytes]]:
    """DATA staged as the relay stages an upload: sealed to a RAM-only key, on disk."""
    area = StagingArea(tmp_path_factory.mktemp("staging"))
    file = area.create()
    for start in range(0, len(DATA), 100_000):  # pieces that do not line up with chunks
        file.write(DATA[start : start + 100_000])
    file.close()
    yield file, DATA
    file.discard()


@settings(max_examples=50, deadline=None)
@given(
    moves=st.lists(
        st.tuples(st.integers(0, len(DATA) + 10), st.integers(-1, 3 * channel.BLOCK)),
        min_size=1,
        max_size=8,
    )
)
def test_the_sealed_reader_reads_like_a_file(
    staged: tuple[StagedFile, bytes], moves: list[tuple[int, int]]
) -> None:
    """What the relay serves a streaming worker from: decrypted 64 KiB chunk by chunk,
    read at any offset and any length (-1: to the end), as a plain file would be."""
    file, data = staged
    local = io.BytesIO(data)
    with file.open() as reader:
        for offset, size in moves:
            assert reader.seek(offset) == local.seek(offset)
            assert reader.read(size) == local.read(size)
            assert reader.tell() == local.tell()


def test_a_damaged_staged_file_raises_its_own_error(tmp_path: Path) -> None:
    file = StagingArea(tmp_path).create()
    file.write(DATA)
    file.close()
    sealed = bytearray(file.path.read_bytes())
    sealed[len(sealed) // 2] ^= 0x01
    file.path.write_bytes(sealed)
    with file.open() as reader, pytest.raises(AgeError):
        while reader.read(channel.BLOCK):
            pass
