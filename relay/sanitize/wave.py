"""A WAV result's header, for writing it forward only (video.py streams it).

FFmpeg's WAV muxer writes its sizes last, seeking back, or leaves them 0xFFFFFFFF where it
cannot seek, which some players read as "no audio". Here the header is FFmpeg's own (its fmt
chunk is right for every codec it writes: WAVE_FORMAT_EXTENSIBLE for 24-bit or many
channels, float), written into memory once with no sound, and its sizes are then set from
the count of the data's bytes, taken before anything is sent: RIFF's, data's, and the
sample count of a fact chunk (which FFmpeg adds for float samples). Only raw samples are
written this way (video.py), whose count is the data's size over the frame's (nBlockAlign).
A header of other chunks, or past RIFF's 4 GiB, is `Unwritable`, and the file goes the
memfd way instead.

Runs only inside the sandboxed worker.
"""

from __future__ import annotations

import io
import struct

import av
import av.stream

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
MAX_RIFF = 0xFFFFFFFF
FMT_AT = 12  # after "RIFF", its size and "WAVE"
BLOCK_ALIGN_AT = 12  # in the fmt chunk's body


class Unwritable(Exception):
    """This sound cannot be written as a WAV whose sizes are known up front."""


def header(stream: av.stream.Stream, data_size: int) -> bytes:
    """The header of a WAV holding `stream`'s `data_size` bytes of raw samples (they follow
    it, with one byte of padding when their count is odd). Raises Unwritable."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="wav", options={"fflags": "+bitexact"}) as output:
        output.add_stream_from_template(stream)
        output.start_encoding()  # writes the header (and, closing, its sizes: no sound)
    written = bytearray(buffer.getvalue())
    if written[:4] != b"RIFF" or written[8:12] != b"WAVE":
        raise Unwritable("not RIFF WAVE")
    chunks = _chunks(written)
    if [name for name, _ in chunks] not in ([b"fmt ", b"data"], [b"fmt ", b"fact", b"data"]):
        raise Unwritable("chunks other than fmt, fact and data")
    riff_size = len(written) - 8 + data_size + (data_size & 1)
    if riff_size > MAX_RIFF:
        raise Unwritable("past RIFF's 4 GiB")
    (block_align,) = _U16.unpack_from(written, chunks[0][1] + 8 + BLOCK_ALIGN_AT)
    if block_align == 0 or data_size % block_align:
        raise Unwritable("not whole frames")
    _U32.pack_into(written, 4, riff_size)
    _U32.pack_into(written, chunks[-1][1] + 4, data_size)
    if len(chunks) == 3:
        _U32.pack_into(written, chunks[1][1] + 8, data_size // block_align)
    return bytes(written)


def _chunks(written: bytes | bytearray) -> list[tuple[bytes, int]]:
    """The name and offset of each chunk after WAVE; the last, data, must end the header
    empty, and a fact chunk must hold its one count. Raises Unwritable otherwise."""
    chunks, at = [], FMT_AT
    while at + 8 <= len(written):
        name, (size,) = bytes(written[at : at + 4]), _U32.unpack_from(written, at + 4)
        chunks.append((name, at))
        if name == b"data":
            if size != 0 or at + 8 != len(written):
                raise Unwritable("data not last and empty")
            return chunks
        if name == b"fact" and size != 4:
            raise Unwritable("a fact chunk of other than one count")
        at += 8 + size + (size & 1)
    raise Unwritable("no data chunk")
