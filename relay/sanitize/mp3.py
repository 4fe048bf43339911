"""Where an MP3's frames lie between the tags around them, so that video.py's remux reads
only them, from an input it may not write (the relay's staged file, a source's own file).

A remux of the whole file copies an ID3v1 trailer into the last frame (measured, notes/
metadata.md), and FFmpeg's demuxer knows nothing of Lyrics3 or of an ID3v2 tag appended
at the end. So the tags are found here, as mutagen and taggers write them, and cut off:
- at the start: ID3v2 tags (one after another, as some taggers leave them), an APEv2 tag;
- at the end, peeled one by one in any order (measured on mutagen's test files: APEv2 then
  an appended ID3v2; ID3v1 then an appended ID3v2; APEv2, Lyrics3v2, ID3v1): ID3v1 with
  its TAG+ extension, APEv2 (with or without its header), Lyrics3 v1 and v2, ID3v2 with a
  footer.
A size that points outside the file is an error (the file is refused as malformed).

The Xing, Info or VBRI frame (the encoder's name and settings, LAME's among them) is the
first frame of the audio: FFmpeg's demuxer reads it and does not return it as a packet, and
the muxer writes none (`write_xing 0`); `encoder_frame` says whether there was one.

Runs only inside the sandboxed worker.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO, Generic, Protocol, TypeVar

from . import bits, channel

ID3V2_HEADER = 10
ID3V1 = 128
ID3V1_EXTENDED = 227  # "TAG+", before an ID3v1
APE_FOOTER = 32
APE_HAS_HEADER = 1 << 31
LYRICS3_V1_MAX = 5100 + 11  # its text, at most, and "LYRICSBEGIN"
ID3V2_NAME, ID3V1_NAME, APE_NAME, LYRICS_NAME = "ID3v2 tag", "ID3v1 tag", "APEv2 tag", "Lyrics3 tag"
ENCODER_FRAME_NAME = "Xing/LAME encoder frame"
# Where a Xing or Info header starts in its frame (after the side information, which depends
# on the MPEG version and the channels), and where VBRI's does.
ENCODER_TAG_OFFSETS = (13, 21, 36)
_SYNCSAFE = re.compile(rb"[\x00-\x7f]{4}")


class TagError(Exception):
    """A tag's size points outside the file."""


class Readable(Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...
    def read(self, size: int = -1, /) -> bytes: ...


def _read(source: Readable, offset: int, count: int) -> bytes:
    """Exactly the `count` bytes at `offset` (fewer only at the end of the file)."""
    source.seek(offset)
    data = b""
    while len(data) < count and (more := source.read(count - len(data))):
        data += more
    return data


def _before(source: Readable, start: int, end: int, count: int) -> bytes:
    """The last `count` bytes before `end` (fewer where `start` comes first)."""
    offset = max(start, end - count)
    return _read(source, offset, end - offset)


def _syncsafe(data: bytes) -> int:
    if not _SYNCSAFE.fullmatch(data):
        raise TagError("an ID3v2 size that is not syncsafe")
    return data[0] << 21 | data[1] << 14 | data[2] << 7 | data[3]


def _id3v2_size(header: bytes) -> int:
    """The whole size of the ID3v2 tag whose 10-byte header (or footer) this is."""
    footer = 10 if header[5] & 0x10 else 0
    return ID3V2_HEADER + _syncsafe(header[6:10]) + footer


def _ape_size(footer: bytes) -> int:
    """The whole size of the APEv2 tag whose 32-byte footer (or header) this is."""
    size = int.from_bytes(footer[12:16], "little")
    flags = int.from_bytes(footer[20:24], "little")
    return size + (APE_FOOTER if flags & APE_HAS_HEADER else 0)


def _head_tag(source: Readable, start: int, end: int) -> tuple[int, str] | None:
    """The size and name of a tag at `start`, if there is one before `end`."""
    head = _read(source, start, min(APE_FOOTER, end - start))
    if head[:3] == b"ID3" and len(head) >= ID3V2_HEADER and head[3] < 0xFF:
        return _id3v2_size(head), ID3V2_NAME
    if head[:8] == b"APETAGEX" and len(head) == APE_FOOTER:
        return _ape_size(head), APE_NAME
    return None


def _tail_tag(source: Readable, start: int, end: int) -> tuple[int, str] | None:
    """The size and name of a tag that ends at `end`, if there is one."""
    tail = _before(source, start, end, ID3V1_EXTENDED + ID3V1)
    if tail[-10:-7] == b"3DI" and tail[-7] < 0xFF:
        return _id3v2_size(tail[-10:]), ID3V2_NAME
    if tail[-ID3V1 : -ID3V1 + 3] == b"TAG" and len(tail) >= ID3V1:
        extended = tail[-ID3V1 - ID3V1_EXTENDED : -ID3V1 - ID3V1_EXTENDED + 4] == b"TAG+"
        return ID3V1 + (ID3V1_EXTENDED if extended else 0), ID3V1_NAME
    if tail[-APE_FOOTER : -APE_FOOTER + 8] == b"APETAGEX":
        return _ape_size(tail[-APE_FOOTER:]), APE_NAME
    if tail[-9:] == b"LYRICS200" and tail[-15:-9].isdigit():
        return int(tail[-15:-9]) + 15, LYRICS_NAME
    if tail[-9:] == b"LYRICSEND":
        window = _before(source, start, end, LYRICS3_V1_MAX)
        begins = window.rfind(b"LYRICSBEGIN")
        if begins >= 0:
            return len(window) - begins, LYRICS_NAME
    return None


def audio_span(source: Readable, size: int) -> tuple[int, int, list[str]]:
    """(start, end, names): the bytes between the tags, and the names of the tags around
    them, each once, in the order found. Raises TagError for a tag larger than its room."""
    start, end, names = 0, size, []
    while start < end and (found := _head_tag(source, start, end)) is not None:
        start += found[0]
        names.append(found[1])
        if start > end:
            raise TagError("a tag past the end of the file")
    while start < end and (found := _tail_tag(source, start, end)) is not None:
        end -= found[0]
        names.append(found[1])
        if end < start:
            raise TagError("a tag before the start of the audio")
    if start >= end:
        raise TagError("no audio between the tags")
    return start, end, list(dict.fromkeys(names))


def encoder_frame(source: Readable, start: int) -> bool:
    """Whether the first frame at `start` is a Xing, Info or VBRI frame."""
    frame = _read(source, start, max(ENCODER_TAG_OFFSETS) + 4)
    if frame[:1] != b"\xff" or len(frame) < 2 or frame[1] & 0xE0 != 0xE0:
        return False
    tags = {frame[at : at + 4] for at in ENCODER_TAG_OFFSETS}
    return bool(tags & {b"Xing", b"Info", b"VBRI"})


class Window(channel.SeekableInput):
    """A read-only file object over bytes [start, end) of a seekable one (PyAV reads it)."""

    def __init__(self, source: BinaryIO | Readable, start: int, end: int) -> None:
        super().__init__(end - start)
        self._source = source
        self._start = start

    def read(self, size: int = -1) -> bytes:
        size = self._wanted(size)
        if size <= 0:
            return b""
        self._source.seek(self._start + self._position)
        data = self._source.read(size)
        self._position += len(data)
        return data


# Layer III frames (ISO/IEC 11172-3 2.4.1.7, 13818-3 2.4.1.7). A frame's main data (its
# scale factors and Huffman-coded samples, `part2_3_length` bits per granule and channel)
# starts `main_data_begin` bytes before the frame's own payload, in the bytes of earlier
# frames (the bit reservoir), and ends where those bits end. What no frame's main data
# covers is ancillary data, which decoders skip: LAME writes its name and version there
# ("LAME3.100", then "UUUU..."), in ordinary frames, not only in its Xing frame. Those bytes
# are zeroed; the decoded sound is unchanged (tested against Debian's ffmpeg). Layer I and
# II (MP2) have no reservoir, and their ancillary data, after bit allocations this does not
# read, is left as it is.
MPEG1 = 3  # the header's version bits; 2 is MPEG-2, 0 MPEG-2.5, 1 reserved
LAYER3 = 1  # the header's layer bits
MONO = 3  # the header's channel mode bits
HEADER = 4
CRC = 2
# kbit/s by the header's bitrate index (0: free format, 15: invalid), by MPEG-1 or not.
BITRATES = {
    True: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    False: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
SAMPLE_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
# Bits before the first part2_3_length (main_data_begin, private bits, scfsi), and between
# one part2_3_length and the next, by (MPEG-1, mono).
SIDE_PREFIX = {(True, True): 18, (True, False): 20, (False, True): 9, (False, False): 10}
GRANULE_BITS = {True: 59, False: 63}  # one granule of one channel's side information
REACH = {True: 511, False: 255}  # the furthest back main_data_begin points
_T = TypeVar("_T")


class FrameError(Exception):
    """Bytes that are not whole Layer III frames."""


@dataclass(frozen=True)
class Frame:
    """Where one Layer III frame's payload and main data lie."""

    size: int  # the whole frame
    payload: int  # offset of the payload (after header, CRC and side information)
    main_data_begin: int  # bytes before the payload where the main data starts
    main_data: int  # bytes of main data
    reach: int  # the furthest back a frame of its version may start its main data


def parse_frame(data: bytes | bytearray, at: int = 0) -> Frame:
    """The layout of the Layer III frame at `at` of `data` (its size as its header gives it,
    which may pass the end of `data`; a free-format frame, no bitrate in its header, ends
    where `data` ends). Raises FrameError where the side information is not all there."""
    header = data[at : at + HEADER]
    if len(header) < HEADER or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        raise FrameError("no frame header")
    version, layer = header[1] >> 3 & 3, header[1] >> 1 & 3
    rate_index, bitrate_index = header[2] >> 2 & 3, header[2] >> 4
    if version == 1 or layer != LAYER3 or rate_index == 3 or bitrate_index == 15:
        raise FrameError("not a Layer III frame header")
    mpeg1, mono = version == MPEG1, header[3] >> 6 == MONO
    if bitrate_index:
        per_sample = 144 if mpeg1 else 72
        bitrate = BITRATES[mpeg1][bitrate_index] * 1000
        size = per_sample * bitrate // SAMPLE_RATES[version][rate_index] + (header[2] >> 1 & 1)
    else:
        size = len(data) - at
    side = HEADER + (0 if header[1] & 1 else CRC)
    prefix, granule = SIDE_PREFIX[mpeg1, mono], GRANULE_BITS[mpeg1]
    blocks = (2 if mpeg1 else 1) * (1 if mono else 2)
    payload = side + (prefix + blocks * granule + 7) // 8
    if size < payload or at + payload > len(data):
        raise FrameError("a frame without its side information")
    start = (at + side) * 8
    main_bits = sum(bits.read(data, start + prefix + i * granule, 12) for i in range(blocks))
    begin = bits.read(data, start, 9 if mpeg1 else 8)
    return Frame(size, payload, begin, (main_bits + 7) // 8, REACH[mpeg1])


class Reservoir(Generic[_T]):
    """Zeroes the ancillary bytes of the Layer III frames of one stream, packet by packet
    (each packet whole frames, as FFmpeg's demuxers give them). A packet is held until no
    later frame can reach back into it; `push` gives back the packets that are final, in
    order, each with its item (the caller's packet), and `finish` the rest.

    A frame cut short (a recording that stopped mid-frame) is left as it is; if it is the
    last, the frames before it are zeroed around its main data. From a packet that is not
    whole frames, or that follows a frame cut short, the stream passes unchanged (`whole`
    turns false): where a decoder takes its reservoir from is no longer certain, so the held
    packets go out unchanged too."""

    def __init__(self) -> None:
        # Each held packet: its bytes, and per frame to zero (where its payload starts in
        # the packet, and in all payloads end to end; the payload's size).
        self._held: deque[tuple[bytearray, list[tuple[int, int, int]], _T]] = deque()
        self._used: list[tuple[int, int]] = []  # main data, as [start, end) of all payloads
        self._position = 0  # where the next payload starts, in all payloads end to end
        self._reach = 0
        self._cut = False  # the last frame was cut short
        self.zeroed = 0  # ancillary bytes that were not zero
        self.whole = True

    def push(self, data: bytes, item: _T) -> list[tuple[bytes, _T]]:
        if not self.whole:
            return [(data, item)]
        try:
            if self._cut:
                raise FrameError("a frame after one cut short")
            frames = self._frames(data)
        except FrameError:
            self.whole = False
            held = [(bytes(packet), held_item) for packet, _, held_item in self._held]
            self._held.clear()
            return [*held, (data, item)]
        self._held.append((bytearray(data), frames, item))
        return self._release(self._position - self._reach)

    def finish(self) -> list[tuple[bytes, _T]]:
        return self._release(self._position)

    def _frames(self, data: bytes) -> list[tuple[int, int, int]]:
        """The frames of one packet to zero, their main data noted. Raises FrameError
        (noting nothing) for a packet that is not whole frames."""
        parsed, at = [], 0
        while at < len(data):
            frame = parse_frame(data, at)
            parsed.append((at, frame))
            at += frame.size
        frames = []
        for at, frame in parsed:
            start = self._position
            size = min(frame.size, len(data) - at) - frame.payload
            self._position += size
            begin = max(0, start - frame.main_data_begin)
            if frame.main_data:
                self._used.append((begin, begin + frame.main_data))
            self._reach = max(self._reach, frame.reach)
            if at + frame.size > len(data):
                self._cut = True  # the last in its packet (the loop above ended)
            else:
                frames.append((at + frame.payload, start, size))
        return frames

    def _release(self, final: int) -> list[tuple[bytes, _T]]:
        """The held packets whose payloads lie wholly before `final`, zeroed."""
        ready = []
        while self._held:
            data, frames, item = self._held[0]
            if frames and frames[-1][1] + frames[-1][2] > final:
                break
            self._held.popleft()
            for offset, start, size in frames:
                self._zero(data, offset, start, start + size)
            ready.append((bytes(data), item))
        if self._held and self._held[0][1]:
            oldest = self._held[0][1][0][1]
            self._used = [(s, e) for s, e in self._used if e > oldest]
        return ready

    def _zero(self, data: bytearray, offset: int, start: int, end: int) -> None:
        """Zeroes the bytes of the payload at `offset` of `data` (at `start` to `end` of all
        payloads) that no main data covers."""
        gaps, at = [], start
        for used_start, used_end in sorted(self._used):
            if used_start >= end:
                break
            if used_start > at:
                gaps.append((at, used_start))
            at = max(at, used_end)
        gaps += [(at, end)] if at < end else []
        for gap_start, gap_end in gaps:
            low, high = offset + gap_start - start, offset + gap_end - start
            self.zeroed += high - low - data.count(0, low, high)
            data[low:high] = bytes(high - low)
