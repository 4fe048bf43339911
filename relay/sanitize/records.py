"""Codec configuration records (a stream's "extradata") that can carry tags of their own:
rewritten without them before a remux copies them into the result.

- Vorbis (Matroska, WebM): the record is the stream's three headers, Xiph-laced; the second
  is a comment header with a vendor string and any number of NAME=value tags, which no
  container tag list shows (FFmpeg's Matroska reader does not read them). It is replaced
  by an empty comment header: no vendor, no tags. The identification and setup headers,
  which decoding needs, are kept byte for byte.
- FLAC (Matroska, MP4): the record may be "fLaC" and the file's metadata blocks
  (VORBIS_COMMENT, PICTURE, APPLICATION, CUESHEET...); only the 34-byte STREAMINFO, which
  decoding needs, is kept. FFmpeg 8's muxers already write nothing else from such a
  record (the Matroska one adds its own comment block, vendor "Lavf"): this is a guard
  for a muxer that would.

Pure: bytes in, bytes out. Raises RecordError for a record that does not parse.
"""

from __future__ import annotations

STREAMINFO_SIZE = 34
EMPTY_VORBIS_COMMENT = b"\x03vorbis" + bytes(4) + bytes(4) + b"\x01"


class RecordError(ValueError):
    """A configuration record whose structure does not add up."""


def _xiph_unlace(record: bytes) -> list[bytes]:
    """The packets of a Xiph-laced record: a count minus one, the sizes of all but the
    last (each a run of 255s and a final smaller byte), then the packets."""
    if not record:
        raise RecordError("empty record")
    count, position, sizes = record[0] + 1, 1, []
    for _ in range(count - 1):
        size = 0
        while True:
            if position >= len(record):
                raise RecordError("lacing runs past the end")
            size += record[position]
            position += 1
            if record[position - 1] != 255:
                break
        sizes.append(size)
    if position + sum(sizes) > len(record):
        raise RecordError("packets run past the end")
    packets = []
    for size in sizes:
        packets.append(record[position : position + size])
        position += size
    packets.append(record[position:])
    return packets


def _xiph_lace(packets: list[bytes]) -> bytes:
    out = bytearray([len(packets) - 1])
    for packet in packets[:-1]:
        out += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    return bytes(out) + b"".join(packets)


def vorbis_without_comments(record: bytes) -> tuple[bytes, bool]:
    """The record with an empty comment header, and whether the old one said anything
    (a vendor or tags). Raises RecordError."""
    packets = _xiph_unlace(record)
    if len(packets) != 3 or not all(p[1:7] == b"vorbis" for p in packets):
        raise RecordError("not the three Vorbis headers")
    if [p[0] for p in packets] != [1, 3, 5]:
        raise RecordError("Vorbis headers out of order")
    said = packets[1] != EMPTY_VORBIS_COMMENT
    return _xiph_lace([packets[0], EMPTY_VORBIS_COMMENT, packets[2]]), said


def flac_streaminfo(record: bytes) -> tuple[bytes, bool]:
    """The record's STREAMINFO alone, and whether other blocks went. Raises RecordError."""
    if len(record) == STREAMINFO_SIZE:
        return record, False
    if not record.startswith(b"fLaC") or len(record) < 8 + STREAMINFO_SIZE:
        raise RecordError("not a FLAC record")
    kind, length = record[4] & 0x7F, int.from_bytes(record[5:8], "big")
    if kind != 0 or length != STREAMINFO_SIZE:
        raise RecordError("FLAC record without STREAMINFO first")
    return record[8 : 8 + STREAMINFO_SIZE], len(record) > 8 + STREAMINFO_SIZE
