"""MPEG-1, MPEG-2 and MPEG-4 Part 2 video (Xvid, DivX, the MPEG-4 of older phones' 3GP):
streams cut by start codes (00 00 01 and a code byte). What the remux removes from inside
them, and what an MPEG-4 packet says of frame order.

Rules:
- user data (code B2) is dropped, from packets and from the configuration record:
  encoders write their name and version there ("XviD0069", "DivX503b1393p",
  "Lavc59.37.100"). It runs to the next start code (the standards forbid 23 zero bits in a
  row inside it);
- except, in MPEG-4, what FFmpeg's decoder reads from it (`decoder_hint`): an Xvid build
  makes it use Xvid's own IDCT (measured: without "XviD0069", a libxvid video decodes to
  other pixels, PSNR 61 dB), and Xvid, DivX and old FFmpeg versions turn on workarounds
  for their encoders' bugs; DivX's "p" marks packed B-frames. Each such string is
  rewritten with the smallest number that makes the decoder choose the same ("XviD0069"
  becomes "XviD33", "DivX503b1393p" "DivX503b0p"), so the picture decodes identical and
  the exact version is not told; FFmpeg's builds of 2014-2016 are one more class (their
  interlaced edges, FF_BUG_IEDGE); a version that changes nothing (any other FFmpeg since
  2005) goes, except in a stream kept under an Xvid fourcc (`XVID_TAGS`), where FFmpeg
  would then assume an early Xvid;
- every other byte is copied as it is;
- an MPEG-4 packet holding more than one video object plane (VOP, code B6) is DivX's
  "packed B-frames": FFmpeg finds the second frame only through DivX's "p" above, and made
  up times would not fit, so video.py keeps such a stream in an AVI;
- `vop_types` reads each VOP's coding type (I, P, B or S): video.py counts VOPs per packet,
  and tells whether a stream reorders its frames.

Pure functions on bytes: no I/O, no FFmpeg.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Patterns, not bytes.find: `re` searches any buffer (a packet's memoryview) without a copy.
_START = re.compile(rb"\x00\x00\x01")
_USER_DATA = re.compile(rb"\x00\x00\x01\xb2")
_VOP = re.compile(rb"\x00\x00\x01\xb6(.?)", re.DOTALL)
# vop_coding_type, the two bits after a VOP's start code (ISO/IEC 14496-2, 6.3.5)
I_VOP, P_VOP, B_VOP, S_VOP = 0, 1, 2, 3
CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4"})


# FFmpeg's decode_user_data (libavcodec/mpeg4videodec.c), as patterns; the thresholds are
# those of ff_mpeg4_workaround_bugs: each number becomes the smallest of its class.
_DIVX = re.compile(rb"DivX(\d{1,9})(?:Build|b)(\d{1,9})(.?)", re.DOTALL)
_XVID = re.compile(rb"XviD(\d{1,9})")
_LAVC = re.compile(rb"FFmpe[^b]+b(\d{1,9})|FFmpeg v\d+\.\d+\.\d+ / libavcodec build: (\d{1,9})")
_LAVC_VERSION = re.compile(rb"Lavc(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_XVID_CLASSES = (0, 2, 4, 13, 33)  # builds <= 1, <= 3, <= 12, <= 32, later
_DIVX_VERSIONS = (0, 500, 501, 502, 503)  # < 500, 500, 501, 502, later
_LAVC_CLASSES = (0, 4653, 4655, 4670)  # builds after 4712 need nothing, but for:
# FFmpeg's (not Libav's: micro version >= 100) builds between Lavc55.66.100 and
# Lavc57.64.101 (2014-2016, save a few 3.2 point releases), whose interlaced motion
# compensation at the picture's edges the decoder imitates (FF_BUG_IEDGE). Measured: an
# interlaced MPEG-4 with "Lavc57.24.102" in its user data decodes to other pixels than the
# same stream with "Lavc59.37.100".
_IEDGE_AFTER, _IEDGE_BEFORE = 3621476, 3752552
_IEDGE_FIXED = range(3752037, 3752192)
_LAVC_NEEDS_NOTHING = 4713
# The codec tags (an AVI's fourcc) for which FFmpeg, finding no encoder named in the
# stream, assumes an early Xvid build, with its IDCT and workarounds: a stream kept under
# one of these tags keeps the name of a modern FFmpeg in its place (`tagged`).
XVID_TAGS = frozenset({"XVID", "XVIX", "RMP4", "ZMP4", "SIPP"})
_DIVX_BUGGY_BUILD = (501, 20020416)  # this one DivX release has a padding bug of its own


def _class(value: int, floors: tuple[int, ...]) -> int:
    return max(floor for floor in floors if floor <= value)


def _lavc_class(build: int) -> int | None:
    """The smallest FFmpeg build that FFmpeg's decoder treats as `build`, or None for a
    build it works around nothing for."""
    if build < _LAVC_NEEDS_NOTHING:
        return _class(build, _LAVC_CLASSES)
    iedge = _IEDGE_AFTER < build < _IEDGE_BEFORE and build not in _IEDGE_FIXED
    return _IEDGE_AFTER + 1 if iedge and build & 0xFF >= 100 else None


def decoder_hint(content: bytes, tagged: bool = False) -> bytes | None:
    """What FFmpeg's MPEG-4 decoder reads from a user data unit's `content` (the bytes
    after its start code), with each number the smallest that makes it decode the same;
    None when it reads nothing that changes decoding. `tagged`: the stream is kept under
    one of XVID_TAGS, so an FFmpeg build of any age is still named."""
    if found := _DIVX.match(content):
        version, build = int(found[1]), int(found[2])
        packed = b"p" if found[3] == b"p" else b""
        if (version, build) != _DIVX_BUGGY_BUILD:
            version = _class(version, _DIVX_VERSIONS)
            build = 0 if build < 1814 else 1814
        return b"DivX%db%d%s" % (version, build, packed)
    if found := _XVID.match(content):
        return b"XviD%d" % _class(int(found[1]), _XVID_CLASSES)
    build = -1
    if found := _LAVC.match(content):
        build = int(found[1] or found[2])
    elif found := _LAVC_VERSION.match(content):
        build = (int(found[1]) << 16) + (int(found[2]) << 8) + int(found[3])
    elif content.split(b"\x00", 1)[0] == b"ffmpeg":
        build = 4600
    if build < 0:
        return None
    kind = _lavc_class(build)
    if kind is None:
        return b"FFmpegb%d" % _LAVC_NEEDS_NOTHING if tagged else None
    return b"FFmpegb%d" % kind


def _user_data(data: bytes | memoryview) -> Iterator[tuple[int, int, int]]:
    """(start, content, end) of each user data unit: its start code, the bytes after it,
    and the next start code (or the end)."""
    found = _USER_DATA.search(data)
    while found is not None:
        following = _START.search(data, found.end())
        end = len(data) if following is None else following.start()
        yield found.start(), found.end(), end
        found = _USER_DATA.search(data, end)


def without_user_data(
    data: bytes | memoryview, hints: bool = False, tagged: bool = False
) -> tuple[bytes | memoryview, int]:
    """`data` without its user data units (with `hints`, MPEG-4: each unit that holds a
    decoder hint is rewritten to hold only that; `tagged` as decoder_hint's); returns it
    (`data` itself, not copied, when nothing changed) and how many units went or changed."""
    view = memoryview(data)
    kept = bytearray()
    changed, position = 0, 0
    for start, content, end in _user_data(data):
        kept += view[position:start]
        original = bytes(view[content:end])
        hint = decoder_hint(original, tagged) if hints else None
        if hint is not None:
            kept += view[start:content]
            kept += hint
        changed += hint != original
        position = end
    if not changed:
        return data, 0
    kept += view[position:]
    return bytes(kept), changed


def vop_types(data: bytes | memoryview) -> list[int]:
    """The coding type of each VOP in an MPEG-4 packet, in order (a VOP whose header is
    cut off at the end of the packet counts as a P-VOP: it is one more frame)."""
    return [m[1][0] >> 6 if m[1] else P_VOP for m in _VOP.finditer(data)]
