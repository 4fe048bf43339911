"""AV1 temporal units, cut into OBUs (open bitstream units): what the remux removes from
inside the video bitstream.

Rules (AV1 specification, section 5.3; AV1 in MP4 and Matroska, the "low overhead"
format):
- metadata OBUs (type 5) are dropped: ITU-T T.35 payloads (vendor data), timecodes (the
  time of filming) and types left to private use can carry anything. A decoder needs none
  of them to show the picture (HDR light levels and mastering colours go too, as HEVC's
  SEI does in nal.py: the picture still plays, in SDR tones on some screens);
- every other OBU is copied byte for byte, so the picture decodes identical;
- each OBU but the last must state its size; a size that runs past the packet, a
  forbidden bit set or a size field cut short is an error (`ObuError`), never a guess;
- an `av1C` configuration record (4 bytes, then OBUs) loses its metadata OBUs the same
  way.

Pure functions on bytes: no I/O, no FFmpeg.
"""

from __future__ import annotations

from collections.abc import Iterator

METADATA = 5
AV1C_HEADER = 4  # marker and version, profile and level, tier and colour, delay


class ObuError(ValueError):
    """A packet or configuration record whose OBUs do not add up."""


def _leb128(data: bytes | memoryview, position: int) -> tuple[int, int]:
    """An unsigned LEB128 value at `position` (8 bytes at most) and the offset after it."""
    value = 0
    for index in range(8):
        if position + index >= len(data):
            raise ObuError("size field cut short")
        byte = data[position + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, position + index + 1
    raise ObuError("size field too long")


def obus(data: bytes | memoryview) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each OBU of a packet. Raises ObuError."""
    position = 0
    while position < len(data):
        header = data[position]
        if header & 0x80:
            raise ObuError("forbidden bit set")
        kind, extended, sized = (header >> 3) & 0x0F, header & 0x04, header & 0x02
        payload = position + 1 + (1 if extended else 0)
        if payload > len(data):
            raise ObuError("header cut short")
        if sized:
            size, payload = _leb128(data, payload)
            end = payload + size
        else:
            end = len(data)  # the last OBU may leave its size to the packet's
        if end > len(data):
            raise ObuError("OBU runs past the packet")
        yield kind, position, end
        position = end


def without_metadata(data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    """The packet without its metadata OBUs, and how many went. The packet itself (no
    copy) when there were none. Raises ObuError."""
    pieces: list[bytes | memoryview] = []
    kept_from, dropped = 0, 0
    for kind, start, end in obus(data):
        if kind == METADATA:
            pieces.append(data[kept_from:start])
            kept_from, dropped = end, dropped + 1
    if not dropped:
        return data, 0
    pieces.append(data[kept_from:])
    return b"".join(pieces), dropped


def av1c_without_metadata(extradata: bytes) -> tuple[bytes, int]:
    """An av1C configuration record without metadata OBUs among its configOBUs, and how
    many went. Raises ObuError."""
    if len(extradata) < AV1C_HEADER or not extradata[0] & 0x80:
        raise ObuError("not an av1C record")
    rest, dropped = without_metadata(extradata[AV1C_HEADER:])
    return extradata[:AV1C_HEADER] + bytes(rest), dropped
