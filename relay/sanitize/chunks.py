"""PNG and WebP without metadata: their chunks are copied through an allowlist, so the
image data is never decoded or re-encoded.

Rules (measured in notes/metadata.md):
- PNG keeps IHDR PLTE IDAT IEND tRNS gAMA cHRM sRGB sBIT bKGD pHYs and the APNG chunks
  acTL fcTL fdAT, byte for byte (CRCs included); everything else (tEXt, zTXt, iTXt with
  XMP, eXIf, tIME, iCCP, private chunks, data after IEND) is left out;
- WebP keeps VP8, VP8L, ALPH, ANIM, ANMF and VP8X with its ICC, EXIF and XMP flags
  cleared; the RIFF size is rewritten;
- a chunk list alone loses orientation held in eXIf or XMP: the caller checks orientation
  first and re-encodes such files instead (see `images.py`).

Pure: bytes in, bytes out. Raises ValueError for a file whose chunk structure is broken.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_KEPT = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"IDAT",
        b"IEND",
        b"tRNS",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"sBIT",
        b"bKGD",
        b"pHYs",
        b"acTL",
        b"fcTL",
        b"fdAT",
    }
)
WEBP_KEPT = frozenset({b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"VP8X"})
# VP8X flag bits that announce metadata chunks (ICC profile, EXIF, XMP).
_VP8X_METADATA_FLAGS = 0x20 | 0x08 | 0x04


def _name(kind: bytes) -> str:
    return kind.decode("ascii", "replace").strip()


def strip_png(data: bytes) -> tuple[bytes, list[str]]:
    """The allowed chunks of a PNG, and the names of the chunk types left out.
    Raises ValueError for a broken chunk structure, a bad CRC, or no image data."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out = [PNG_SIGNATURE]
    removed: list[str] = []
    position, seen = len(PNG_SIGNATURE), []
    while True:
        if position + 12 > len(data):
            raise ValueError("truncated chunk")
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            raise ValueError("chunk runs past the end of the file")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[position + 4 : end - 4]) != crc:
            raise ValueError("chunk checksum mismatch")
        if kind in PNG_KEPT:
            out.append(data[position:end])
            seen.append(kind)
        else:
            removed.append(_name(kind))
        position = end
        if kind == b"IEND":
            break
    if not seen or seen[0] != b"IHDR" or b"IDAT" not in seen:
        raise ValueError("no image data")
    if position < len(data):
        removed.append("data after the end of the image")
    return b"".join(out), list(dict.fromkeys(removed))


def strip_webp(data: bytes) -> tuple[bytes, list[str]]:
    """The allowed chunks of a WebP, and the names of the chunk types left out.
    Raises ValueError for a broken RIFF structure or no image data."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    (riff_size,) = struct.unpack("<I", data[4:8])
    end_of_riff = min(len(data), 8 + riff_size)
    chunks: list[bytes] = []
    removed: list[str] = []
    position = 12
    while position + 8 <= end_of_riff:
        kind = data[position : position + 4]
        (size,) = struct.unpack("<I", data[position + 4 : position + 8])
        end = position + 8 + size + (size & 1)
        if position + 8 + size > end_of_riff:
            raise ValueError("chunk runs past the end of the file")
        chunk = data[position : min(end, end_of_riff)]
        if len(chunk) < 8 + size + (size & 1):
            chunk += b"\x00"
        if kind == b"VP8X":
            if size < 10:
                raise ValueError("short VP8X chunk")
            flags = chunk[8] & ~_VP8X_METADATA_FLAGS & 0xFF
            chunk = chunk[:8] + bytes([flags]) + chunk[9:]
            if chunk[8] != data[position + 8]:
                removed.append("VP8X metadata flags")
        if kind in WEBP_KEPT:
            chunks.append(chunk)
        else:
            removed.append(_name(kind))
        position = end
    if not any(c[:4] in (b"VP8 ", b"VP8L", b"ANMF") for c in chunks):
        raise ValueError("no image data")
    if position < len(data):
        removed.append("data after the end of the image")
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body, list(dict.fromkeys(removed))
