"""Whether an Ogg file ends inside a page: cut short (issue 4: truncated files are refused).

FFmpeg's Ogg demuxer reads whole pages only and drops a last page cut short without a word
(measured: an Opus and a Vorbis file cut at 55% demuxed without an error or a packet
flagged corrupt, and their durations, taken from the last whole page, were what they
held), and no Ogg header gives a length to fall short of. What does show the cut is the
page itself: each starts "OggS", version 0, and its 27-byte header and lacing values give
its length. So the page headers are followed from the last page the demuxer read (its
packets' position) to the end of the file: a header, lacing values or body that the file
ends inside is a page cut short. Bytes after the last page that do not start a page are
junk (an appended tag), which the demuxer skips and the result does not hold: not a cut.

Nothing shows a cut at a page boundary: such a file is a whole, shorter recording.

Pure reading (seek, read) of a file object; runs only inside the sandboxed worker.
"""

from __future__ import annotations

from typing import BinaryIO

from . import channel

CAPTURE = b"OggS\x00"  # the capture pattern and the only version
HEADER = 27  # bytes, before the lacing values
SEGMENTS_AT = 26  # the count of lacing values, the header's last byte


def ends_inside_a_page(source: BinaryIO | channel.RemoteInput, start: int, size: int) -> bool:
    """Whether the `size`-byte file ends inside a page, following page headers from
    `start` (the first byte of a page)."""
    at = start
    while at < size:
        source.seek(at)
        header = source.read(HEADER)
        if not CAPTURE.startswith(header[: len(CAPTURE)]):
            return False  # not a page: junk after the last one
        if len(header) < HEADER:
            return True
        count = header[SEGMENTS_AT]
        lacing = source.read(count)
        if len(lacing) < count:
            return True
        at += HEADER + count + sum(lacing)
    return at > size
