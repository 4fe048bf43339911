"""FLAC decoded and encoded again in the worker with PyAV (video.py writes it, twice), and
the check that nothing of the sound changed.

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
  back, so the file is encoded twice (rewrites.py): ~2x the time of one encoding (measured:
  10 minutes of 48 kHz 24-bit stereo, 32 MB, 1.2 s each), in flat memory.

Runs only inside the sandboxed worker. Raises av.FFmpegError, records.RecordError and
MediaError.
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

from . import records
from .media import MediaError

ENCODER_NAME = "FLAC vendor string and non-audio blocks"
WIDEST_PLAIN = 24  # bits per sample FFmpeg's encoder writes without its experimental mode


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


def check(record: bytes, source: Samples, written: bytes, result: Samples) -> None:
    """The result (its record as written, its samples decoded) must hold the input's
    samples (`record`, `source`): all those its STREAMINFO counts, of the same MD5 where
    it gives one. Raises MediaError otherwise (and RecordError)."""
    before, after = streaminfo(record), streaminfo(written)
    if before.total and source.count != before.total:
        raise MediaError("samples missing")
    if result.digest() != source.digest() or after.total != source.count:
        raise MediaError("the sound changed")
    if any(before.md5) and before.bits == after.bits and before.md5 != after.md5:
        raise MediaError("the sound does not match its MD5")
