"""Encoder names in AAC frames: FFmpeg's encoder ("Lavc59.37.100") and FAAC ("libfaac 1.24")
write theirs into a fill element (ID_FIL) at the start of the first frame's raw data block
(ISO/IEC 14496-3 4.4.2.1, 4.4.2.7). Its payload is rewritten here as plain filler of the
same size (extension type EXT_FILL, fill nibble 0000, fill bytes 10100101), which every
decoder skips: the decoded sound is unchanged (tested against Debian's ffmpeg).

Only fill elements that open a frame are read: finding one after a channel element would
mean decoding its spectral data. A fill element that holds dynamic range control or SBR
data (extension types 11, 13, 14) is sound, not a name, and is kept as it is.

Runs only inside the sandboxed worker.
"""

from __future__ import annotations

from . import bits

ID_FIL = 6
ID_BITS, COUNT_BITS, ESCAPE_BITS, EXTENSION_BITS = 3, 4, 8, 4
# Extension types whose payload is no sound: EXT_FILL, EXT_FILL_DATA, EXT_DATA_ELEMENT.
NOT_SOUND = frozenset({0, 1, 2})
FILL_BYTE = 0b10100101


def without_names(data: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    """`data` (one AAC frame, raw) with the payloads of the fill elements that open it made
    plain filler, and how many such payloads held something else."""
    if not data or data[0] >> (8 - ID_BITS) != ID_FIL:
        return data, 0  # the common case: a frame that opens with sound
    total = len(data) * 8
    frame = bytearray(data)
    at, rewritten = 0, 0
    while at + ID_BITS + COUNT_BITS <= total and bits.read(frame, at, ID_BITS) == ID_FIL:
        count = bits.read(frame, at + ID_BITS, COUNT_BITS)
        at += ID_BITS + COUNT_BITS
        if count == 15:
            if at + ESCAPE_BITS > total:
                break
            count += bits.read(frame, at, ESCAPE_BITS) - 1
            at += ESCAPE_BITS
        end = at + count * 8
        if end > total:
            break  # not a frame this reads: left as it is
        if count and bits.read(frame, at, EXTENSION_BITS) in NOT_SOUND:
            filler = int.from_bytes(bytes([0]) + bytes([FILL_BYTE]) * (count - 1), "big")
            if bits.read(frame, at, count * 8) != filler:
                rewritten += 1
                bits.write(frame, at, count * 8, filler)
        at = end
    if not rewritten:
        return data, 0
    return bytes(frame), rewritten
