"""FLAC decoded and encoded again in the worker with PyAV (video.py writes it, once or
twice), and the check that nothing of the sound changed.

Why encoded again, not remuxed as the other formats: FFmpeg's FLAC parser cuts the stream
from one frame header to the next, so whatever lies between two frames (a tag written into
the middle or the end of the stream, an editor's junk) would ride inside a packet; only
decoding keeps nothing but samples. The vendor string and every metadata block but
STREAMINFO go with it. (FLAC in Ogg, Matroska or MP4 is remuxed: its packets are the
container's, and only STREAMINFO is kept of its record, records.py.)

Rules:
- the encoder writes as many bits per sample as the input's STREAMINFO gives (FFmpeg's
  decoder hands out 16-bit samples for up to 16 bits, else 32-bit ones, and its encoder
  writes 16 or, without being told, 24); more than 24 needs FFmpeg's experimental mode,
  which writes a stream the reference decoder reads;
- nothing is assumed lossless: every sample decoded from the input is hashed as it goes to
  the encoder, every sample decoded from the result (video.Readback) likewise, per plane,
  and the two must be equal (`Samples`);
- the input must hold the samples its STREAMINFO counts (when it counts them), and its
  frames must follow one another: FFmpeg's FLAC parser drops a frame whose checksum fails
  (measured: one bit flipped anywhere), and the next frame's number then either skips it
  or is lost (no timestamp), so a gap in the decoded frames' times is a frame missing,
  even in a FLAC whose STREAMINFO counts nothing (as a streaming encoder writes it);
- where the input's STREAMINFO holds the MD5 of its samples (the recorder computed it over
  what it encoded), the result's, computed by FFmpeg's encoder over what it was given,
  must be the same: a check of the decoding by the program that made the file. It applies
  when both are as wide (16, 24 or 32 bits; FFmpeg writes 8 or 12 bits as 16, 20 as 24,
  and hashes what it writes);
- the FLAC muxer writes STREAMINFO's totals (sample count, MD5, frame sizes) last, seeking
  back. Where the input's STREAMINFO gives its count and MD5 and the result is as wide,
  those are the result's too: they go out up front in place of the muxer's zeros, with
  frame sizes of 0 ("not known", RFC 9639), and the file is encoded once (`up_front`);
  what the muxer writes back at the end (the encoder's own totals) is not sent, but must
  say the same (`check`). Otherwise the file is encoded twice (rewrites.py): ~2x the time
  of one encoding (measured: 10 minutes of 48 kHz 24-bit stereo, 32 MB, 1.2 s each). In
  flat memory either way.

Runs only inside the sandboxed worker. Raises av.FFmpegError, records.RecordError,
rewrites.RewriteError and MediaError.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.container
from av.audio.stream import AudioStream

from . import records, rewrites
from .media import MediaError

ENCODER_NAME = "FLAC vendor string and non-audio blocks"
WIDEST_PLAIN = 24  # bits per sample FFmpeg's encoder writes without its experimental mode
AS_WIDE = frozenset({16, 24, 32})  # widths it writes as they are (8 and 12 as 16, 20 as 24)
STREAMINFO_AT = 8  # its body's offset in a FLAC file: after "fLaC" and its block's header
FRAME_SIZES = slice(4, 10)  # of its body: the smallest and largest frame's, 0 if not known
TOTALS_AT = 13  # of its body: the width's last 4 bits, the sample count (36 bits), the MD5


@dataclass(frozen=True)
class StreamInfo:
    bits: int  # per sample
    total: int  # samples in each channel; 0: not counted
    md5: bytes  # of the samples; zeros: not computed


def streaminfo(extradata: bytes) -> StreamInfo:
    """What a FLAC stream's record says of its samples. Raises RecordError."""
    body, _ = records.flac_streaminfo(extradata)
    bits = ((body[12] & 0x01) << 4 | body[13] >> 4) + 1
    total = (body[13] & 0x0F) << 32 | int.from_bytes(body[14:18], "big")
    return StreamInfo(bits, total, body[18:34])


class Samples:
    """A digest of decoded sound: one SHA-256 per plane (a planar format's frames cut at
    other places still hash the same), and the count of samples."""

    def __init__(self) -> None:
        self._planes: list[Any] = []  # hashlib's objects
        self.count = 0

    def add(self, frame: av.AudioFrame) -> None:
        kind = frame.format
        size = frame.samples * kind.bytes * (1 if kind.is_planar else frame.layout.nb_channels)
        planes = frame.planes
        while len(self._planes) < len(planes):
            self._planes.append(hashlib.sha256())
        for digest, plane in zip(self._planes, planes, strict=False):
            # A plane's buffer may be longer than its samples (aligned): only they count.
            digest.update(memoryview(plane)[:size])
        self.count += frame.samples

    def digest(self) -> tuple[int, tuple[bytes, ...]]:
        return self.count, tuple(d.digest() for d in self._planes)


def up_front(record: bytes) -> list[rewrites.Rewrite] | None:
    """What the muxer writes last, known before the first sample is encoded: the input's
    sample count and MD5 (from its STREAMINFO, `record`) and frame sizes of 0, as rewrites
    of the STREAMINFO the muxer writes first. None unless the input's STREAMINFO gives a
    count and an MD5 and the result is as wide (AS_WIDE). Raises RecordError."""
    info = streaminfo(record)
    if not info.total or not any(info.md5) or info.bits not in AS_WIDE:
        return None
    packed = ((info.bits - 1) & 0x0F) << 36 | info.total  # TOTALS_AT's 40 bits
    return [
        rewrites.Rewrite(STREAMINFO_AT + FRAME_SIZES.start, bytes(6)),
        rewrites.Rewrite(STREAMINFO_AT + TOTALS_AT, packed.to_bytes(5, "big") + info.md5),
    ]


def wrote_back(done: list[rewrites.Rewrite]) -> None:
    """What the muxer wrote back over a file sent with `up_front`'s totals must lie inside
    STREAMINFO (`check` compares it). Raises RewriteError otherwise."""
    end = STREAMINFO_AT + records.STREAMINFO_SIZE
    if any(r.offset < STREAMINFO_AT or r.offset + len(r.data) > end for r in done):
        raise rewrites.RewriteError("the muxer wrote back outside STREAMINFO")


def totals(packet: av.Packet) -> bytes:
    """The STREAMINFO the encoder hands the muxer with its last packet (its totals), or
    b"" if `packet` carries none."""
    for side_data in packet.iter_sidedata():
        if side_data.data_type == "new_extradata":
            return bytes(side_data)
    return b""


def add_encoder(source: AudioStream, output: av.container.OutputContainer) -> AudioStream:
    """The FLAC stream that takes `source`'s samples, as many bits wide. Raises
    RecordError."""
    context = source.codec_context
    bits = streaminfo(bytes(context.extradata or b"")).bits
    options = {"bits_per_raw_sample": str(bits)} if bits > 16 else {}
    if bits > WIDEST_PLAIN:
        options["strict"] = "experimental"
    return output.add_stream(
        "flac",
        rate=context.sample_rate,
        layout=context.layout,
        format=context.format,
        options=options,
    )


def encoded(
    container: av.container.InputContainer,
    source: AudioStream,
    target: AudioStream,
    samples: Samples | None,
) -> Iterator[av.Packet]:
    """The packets of `target` for every sample decoded from `source`, each sample hashed
    into `samples` (if given) on its way to the encoder. Raises MediaError for a frame
    missing."""
    if source.time_base != Fraction(1, source.codec_context.sample_rate):
        raise MediaError("times not counted in samples")
    following: int | None = None  # the time of the next frame, in samples
    for packet in container.demux(source):
        for frame in source.decode(packet):
            if frame.pts is None or following not in (None, frame.pts):
                raise MediaError("a frame missing")
            following = frame.pts + frame.samples
            if samples is not None:
                samples.add(frame)
            yield from target.encode(frame)
    yield from target.encode(None)


def check(record: bytes, source: Samples, written: bytes, final: bytes, result: Samples) -> None:
    """The result (its STREAMINFO as written, `final` as its encoder ended it, its samples
    decoded) must hold the input's samples (`record`, `source`): all those its STREAMINFO
    counts, of the same MD5 where it gives one; and what the result's STREAMINFO says must
    be what was encoded (but for frame sizes, not known up front). Raises MediaError
    otherwise (and RecordError)."""
    before, done = streaminfo(record), streaminfo(final)
    if before.total and source.count != before.total:
        raise MediaError("samples missing")
    if result.digest() != source.digest() or done.total != source.count:
        raise MediaError("the sound changed")
    if _but_frame_sizes(written) != _but_frame_sizes(final):
        raise MediaError("the header does not say what was encoded")
    if any(before.md5) and before.bits == done.bits and before.md5 != done.md5:
        raise MediaError("the sound does not match its MD5")


def _but_frame_sizes(record: bytes) -> bytes:
    body, _ = records.flac_streaminfo(record)
    return body[: FRAME_SIZES.start] + body[FRAME_SIZES.stop :]
