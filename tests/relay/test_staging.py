"""Staged files written by staging's writer thread: what is written comes back whole and
in order, and a disk error in that thread reaches the caller instead of vanishing."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from relay.staging import StagingArea


def test_many_writes_come_back_in_order(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    pieces = [os.urandom(n) for n in (1, 70_000, 1 << 20, 3, 200_000) * 8]
    staged = area.create()
    for piece in pieces:
        staged.write(piece)
    staged.close()
    with staged.open() as reader:
        assert reader.read() == b"".join(pieces)
    staged.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_disk_error_in_the_writer_is_raised_to_the_caller(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    staged = area.create()
    # /dev/full: every write fails with ENOSPC, as a full disk does.
    assert staged._file is not None
    staged._file.close()
    staged._file = open("/dev/full", "wb", buffering=0)  # noqa: SIM115
    staged.write(os.urandom(100_000))
    with pytest.raises(OSError) as raised:
        staged.close()
    assert raised.value.errno == errno.ENOSPC
    with pytest.raises(ValueError):
        staged.write(b"more")  # closed: nothing more is taken
    staged.discard()
    assert list(tmp_path.iterdir()) == []
