"""MPEG-1, MPEG-2 and MPEG-4 Part 2 video (Xvid, DivX, the MPEG-4 of older phones' 3GP):
streams cut by start codes (00 00 01 and a code byte). What the remux removes from inside
them, and what an MPEG-4 packet says of frame order.

Rules:
- user data (code B2) is dropped, from packets and from the configuration record:
  encoders write their name and version there ("XviD0069", "DivX503b1393p",
  "Lavc59.37.100"), and a decoder shows the same picture without it. It runs to the next
  start code (the standards forbid 23 zero bits in a row inside it). What is lost: FFmpeg
  recognises a few early encoder versions from these strings and works around their bugs
  (Xvid builds before 2004, DivX 4 and 5, lavc before 2005); such a file may now decode
  with small errors;
- every other byte is copied as it is;
- an MPEG-4 packet holding more than one video object plane (VOP, code B6) is DivX's
  "packed B-frames": FFmpeg finds the second frame only through the user data above, so
  video.py does not clean such a stream;
- `vop_types` reads each VOP's coding type (I, P, B or S): video.py counts VOPs per packet,
  and tells whether a stream reorders its frames.

Pure functions on bytes: no I/O, no FFmpeg.
"""

from __future__ import annotations

import re

# Patterns, not bytes.find: `re` searches any buffer (a packet's memoryview) without a copy.
_START = re.compile(rb"\x00\x00\x01")
_USER_DATA = re.compile(rb"\x00\x00\x01\xb2")
_VOP = re.compile(rb"\x00\x00\x01\xb6(.?)", re.DOTALL)
# vop_coding_type, the two bits after a VOP's start code (ISO/IEC 14496-2, 6.3.5)
I_VOP, P_VOP, B_VOP, S_VOP = 0, 1, 2, 3
CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4"})


def without_user_data(data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    """`data` without its user data units; returns it (`data` itself, not copied, when
    there were none) and how many went."""
    found = _USER_DATA.search(data)
    if found is None:
        return data, 0
    view = memoryview(data)
    kept = bytearray()
    removed, position = 0, 0
    while found is not None:
        kept += view[position : found.start()]
        end = _START.search(data, found.end())
        removed += 1
        position = len(view) if end is None else end.start()
        found = _USER_DATA.search(data, position)
    kept += view[position:]
    return bytes(kept), removed


def vop_types(data: bytes | memoryview) -> list[int]:
    """The coding type of each VOP in an MPEG-4 packet, in order (a VOP whose header is
    cut off at the end of the packet counts as a P-VOP: it is one more frame)."""
    return [m[1][0] >> 6 if m[1] else P_VOP for m in _VOP.finditer(data)]
