"""Staged files written by staging's writer thread: what is written comes back whole and
in order, and a disk error in that thread reaches the caller instead of vanishing."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from crypto.keys import Identity
from relay.staging import Final, StagingArea
from tests.relayharness import AGE


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


def test_a_file_sealed_to_its_contacts_is_whole_for_age(tmp_path: Path) -> None:
    """Past several writeback marks (every 16 MiB), the file written for the contacts is
    the age file of every byte sent, in order, and its hashes and size describe it."""
    area = StagingArea(tmp_path)
    contact = Identity.generate()
    pieces = [os.urandom(n) for n in (1 << 20, 70_000, 3, 5 << 20) * 10]
    staged = area.create(Final("application/octet-stream", (contact.recipient,)))
    for piece in pieces:
        staged.write(piece)
    staged.close()
    sent = b"".join(pieces)
    assert staged.size == len(sent) > 3 * (16 << 20)  # past 3 writeback marks
    sealed = staged.path.read_bytes()
    assert staged.sealed_size == len(sealed)
    assert staged.sealed_sha256 == hashlib.sha256(sealed).hexdigest()
    assert staged.plaintext_sha256 == hashlib.sha256(sent).hexdigest()
    key = tmp_path / "identity.txt"
    key.write_text(contact.encode() + "\n")
    opened = subprocess.run(
        [AGE, "-d", "-i", str(key), str(staged.path)], capture_output=True, check=True
    )
    assert opened.stdout == sent
    with pytest.raises(ValueError):
        staged.open()  # sealed to the contacts: the relay cannot read it back
