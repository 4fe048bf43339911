"""The first half of the relay's path for a file to strip, for the child processes of
tests/sanitize/test_memory.py and bench/sanitize.py: the file staged as ingest stages an
upload (sealed to a RAM-only key as it arrives), ready to be read back through a
SealedReader and cleaned into a SealingWriter."""

from __future__ import annotations

from pathlib import Path

from relay.staging import StagedFile, StagingArea

PIECE = 1 << 20  # the form's read size


def stage(source: Path, directory: Path) -> StagedFile:
    """`source` staged in a fresh staging area at `directory`; closed, ready to open."""
    area = StagingArea(directory)
    area.wipe()
    staged = area.create()
    with source.open("rb") as file:
        while block := file.read(PIECE):
            staged.write(block)
    staged.close()
    return staged
