"""Video (MP4, MOV, 3GP, Matroska, WebM, AVI) and audio in MP3, M4A, Ogg (Vorbis, Opus,
FLAC) or WAV remuxed in the worker with PyAV, and FLAC decoded and encoded again (flac.py),
streamed: the input read through `channel.RemoteInput`, the result written forward only
and sent to the relay as it is made, so memory stays flat whatever the file's size.

Why PyAV and not Debian's ffmpeg CLI (which once did all of this, from memfds): the CLI can
only read a seekable input from a path (a memfd held the whole file: 2.1x its size in RAM
with the result); PyAV reads from a Python file object, so the worker asks the relay for the
bytes it needs and the plaintext stays where it is (the relay's sealed staging file,
decrypted 64 KiB at a time). The remux itself is the same libavformat work
(notes/performance.md: 0.23-0.30 s for 200 MB, like the CLI; measured here, 0.2-0.3 s for
500 MB into a null output). What that costs: the FFmpeg build is PyAV's (its wheel bundles
FFmpeg 8), not Debian's (5.1, which the tests use to judge results), and a crash in a
demuxer kills the worker itself, which the relay already treats as a refusal. The hostile
demuxing stays in the sandboxed worker; PyAV may open no other file or URL (`io_open`
refuses every request).

Rules (those of the CLI path they replace, measured in notes/metadata.md):
- the demuxer is forced from the type libmagic found;
- only video streams that are not cover art and audio streams are kept (this drops GPS and
  telemetry tracks, subtitles, attachments); no container, stream or chapter metadata is
  copied; `+bitexact` writes neutral handler names, no encoder version, no creation time;
- packets carry their timing, key-frame flag and only the side data needed to play
  (`KEPT_SIDE_DATA`), nothing else the demuxer attached;
- only streams of the codecs media.py lists are kept: a file holding another is answered
  "unsupported" before anything is written;
- H.264/HEVC SEI units are dropped (nal.py), from packets and from an hvcC record, AV1
  metadata OBUs (obu.py) from packets and an av1C record, MPEG-1/2/4 Part 2 user data
  (mpegvideo.py) from packets and records, and each Motion JPEG frame is rebuilt from its
  image segments (jpeg.py: a camera's EXIF, FFmpeg's comment); a Vorbis comment
  header and FLAC metadata blocks in a stream's record go (records.py); MP3 sound (in any
  container) has its frames' ancillary bytes zeroed, where LAME writes its version (mp3.py),
  and AAC sound the fill element where FFmpeg's encoder or FAAC names itself (aac.py);
- an MP3 is read only between its tags (mp3.py finds ID3v2, APEv2, ID3v1, Lyrics3 at both
  ends: FFmpeg's demuxer would copy an ID3v1 trailer into the last frame), and written with
  neither ID3 tag nor Xing/LAME frame;
- the result is written forward only: fragmented MP4 (a fragment at each key frame and at
  least every `FRAGMENT_BYTES`; the moov waits for the first fragment, so the edit list that
  hides the audio encoder's priming samples is kept, while the trim of its padding at the
  end has no place: one more AAC frame of padding plays), Matroska without cues, whose
  Duration is written up front from the input's, Ogg (its pages go out as they fill), or
  WAV (its samples counted in a first reading, so that the header's sizes are known
  before it is sent: wave.py); an AVI becomes Matroska (the AVI muxer seeks back to
  finish its header). An AVI that cannot (below) stays an AVI, and a WAV of other than
  raw samples (ADPCM, MP3) a WAV: their muxers go back over what they wrote, so each is
  muxed twice, the first time only to learn what the muxer writes over, the second time
  sent forward with that already in place (rewrites.py). A FLAC is encoded again (its
  samples must then decode as the input's): once, its STREAMINFO's totals (which its
  muxer writes last) sent up front from the input's, where that gives them and the result
  is as wide, else twice, as the muxers above (flac.py);
- the result is read back while it is written (`Readback`, a second demuxer in a thread,
  handed the muxer's pieces in memory) and must hold the same streams, the same number of
  packets in each, the input's duration, and decode (the first frames of video, the first
  packets of its sound; a result with sound only, all of it);
- a file cut short is refused (issue 4: truncated files are refused): its header gives
  a longer duration than its packets span, or its index a frame past its end, which the
  demuxer hands over incomplete, flagged corrupt, or (an Ogg) it ends inside a page
  (ogg.py);
- the last gate (gate.py) searches the input's tag values in everything the result takes
  from the input except coded slices.

Runs only inside the sandboxed worker. Raises av.FFmpegError, nal.NalError, obu.ObuError,
records.RecordError, ValueError (jpeg.py), MediaError (refusals, all of them: the worker
reports them as "malformed"), and rewrites.RewriteError (the two passes differ).
"""

from __future__ import annotations

import io
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, BinaryIO, TypeVar

import av
import av.container
import av.stream
from av.audio.stream import AudioStream
from av.stream import Stream

from . import (
    aac,
    channel,
    flac,
    gate,
    jpeg,
    media,
    mp3,
    mpegvideo,
    nal,
    obu,
    ogg,
    records,
    rewrites,
    wave,
)
from .media import MediaError

# The formats (demuxer, muxer, result's type) are media.FORMATS's. The MP4 family's muxers
# (media.MP4_MUXERS, M4A too) write fragmented MP4; these, Matroska without cues; Ogg's
# needs no options to write forward only.
MATROSKA_MUXERS = frozenset({"matroska", "webm"})
# The muxer holds one fragment (MP4) or cluster (Matroska) before writing it: this bounds
# that memory whatever the key-frame interval.
FRAGMENT_BYTES = 4 << 20
# Bytes per call between FFmpeg and Python: fewer calls. The input's is the channel's
# block, so that reads going forward are whole blocks, handed over without a copy.
IO_BUFFER = 1 << 18
INPUT_BUFFER = channel.BLOCK
# The first frames of a video are decoded (each 720p frame of a phone's video costs ~8 ms),
# the rest demuxed and counted; a result holding sound only is decoded whole (an hour of
# AAC in a few seconds, in the readback's thread while the remux goes on).
DECODED_VIDEO_FRAMES = 3
DECODED_AUDIO_PACKETS = 20
# Side data a player needs (priming samples to skip, a palette, a mid-stream change of
# sample rate); the rest (strings, metadata updates, EXIF, camera-specific blocks) goes.
KEPT_SIDE_DATA = frozenset({"skip_samples", "palette", "param_change"})
QUEUED_PIECES = 8  # of IO_BUFFER bytes: how far the muxer may run ahead of the readback
# An AVI is written as Matroska: its own muxer must seek back to finish its header. PyAV
# adds only the codecs Matroska's muxer lists (not ADPCM, which it would otherwise write as
# ACM). An AVI keeps decoding order only: the demuxer
# makes up presentation times (`+genpts`), which is right when no frame is shown after a
# later one, and for MPEG-4 Part 2 (Xvid, DivX): its B-frames are never references, so a
# frame waits for one other at most, the model FFmpeg's made-up times follow (measured:
# the frames of an Xvid and of an FFmpeg MPEG-4 AVI with two B-frames in a row decode
# identical, at identical times, from the Matroska; an H.264 AVI with B-pyramids did not).
# So these AVIs stay AVIs, muxed twice (`NotStreamable`, `_twice`), their packets in
# the input's order and with its decoding times: video with B-frames in another codec;
# MPEG-4 with packed B-frames (DivX's two frames in one packet) or with B-frames its header
# did not announce; a stream Matroska's muxer refuses (ADPCM sound). The first
# `PEEKED_PACKETS` packets are checked before the muxer gets any, so nothing is written
# when a file turns out to be one of these there.
WRITTEN_AS = {"avi": ("matroska", "video/x-matroska")}
DEMUXER_OPTIONS = {"avi": {"fflags": "+genpts"}}
REORDERED_BY_ONE = frozenset({"mpeg4"})
PEEKED_PACKETS = 64
USER_DATA_NAME = "encoder data in the video stream (user data)"
ANCILLARY_NAME = "encoder data in the MP3 frames (ancillary bytes)"
AAC_NAME = "encoder name in the AAC frames (fill element)"
MJPEG_NAME = "camera and encoder data in the video frames (JPEG APPn and COM segments)"
# An MP3 of fewer frames is refused: without its tags and Xing frame, FFmpeg's probe may
# not recognise it (measured: mutagen's lame397v9short.mp3, 3 frames, 72 ms, is not; its
# input had a Xing frame as a fourth).
MP3_MIN_FRAMES = 4
# What goes from inside each codec's stream, as the report names it (by FFmpeg's codec
# names: _codec_id).
INSIDE_NAMES = {
    "h264": media.SEI_NAME,
    "hevc": media.SEI_NAME,
    "av1": media.OBU_NAME,
    **dict.fromkeys(mpegvideo.CODECS, USER_DATA_NAME),
    "mjpeg": MJPEG_NAME,
    "mp3": ANCILLARY_NAME,  # Layer III (mp3.py)
    "aac": AAC_NAME,
}
# A packet's duration this large is a negative 32-bit number read unsigned: FFmpeg's Ogg
# demuxer gives one to a last packet whose end trim starts before it (mutagen's empty.ogg).
WRAPPED_DURATION = 1 << 31
RAW_AUDIO = "pcm_"  # raw samples: nothing can hide in them that a tag names; not searched


class NotStreamable(Exception):
    """This input cannot be written in another format (an AVI as Matroska) or by counting
    first (a WAV's raw samples): `clean` writes it in its own format, muxed twice. Raised
    before anything is written."""


class CutShort(MediaError):
    """The file ends inside a frame its index lists: the demuxer hands that frame over
    incomplete, flagged corrupt. Refused (truncated files are, issue 4).
    (A WAV's last packet is flagged so whenever its samples do not fill one: a WAV of raw
    samples cut short is copied with the sizes of what it holds (`_copy_wav`), if it ends
    on a whole sample frame; one that does not is not wave.py's to write, so it is muxed,
    and refused here.)"""


def _no_io(url: str, flags: int, options: dict[str, str]) -> BinaryIO:
    """PyAV's hook for any further file a demuxer wants (a reference, a playlist entry):
    refused, so the input can open nothing but itself."""
    raise PermissionError("a demuxer asked to open another file")


def _document(container: av.container.InputContainer) -> dict[str, Any]:
    """What media.removed_names and media.tag_values read, as ffprobe would show it."""
    streams = []
    for stream in container.streams:
        picture = bool(stream.disposition & av.stream.Disposition.attached_pic)
        streams.append(
            {
                "codec_type": stream.type,
                "disposition": {"attached_pic": int(picture)},
                "tags": dict(stream.metadata),
            }
        )
    chapters = [{"tags": dict(c.get("metadata", {}))} for c in container.chapters()]
    return {"format": {"tags": dict(container.metadata)}, "streams": streams, "chapters": chapters}


@dataclass
class Tally:
    """What one stream held: packets, and the span of their timestamps (in the stream's
    time base, kept as integers: a Fraction per packet costs on long audio)."""

    kind: str
    codec: str
    width: int
    height: int
    packets: int = 0
    first: int | None = None
    last: int | None = None
    time_base: Fraction | None = None
    position: int = 0  # in the file, the largest of a packet (of its page, in an Ogg)

    def count(self, packet: av.Packet) -> None:
        self.packets += 1
        if packet.pos is not None and packet.pos > self.position:
            self.position = packet.pos
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None:
            return
        if self.time_base is None:
            self.time_base = Fraction(packet.time_base)
        duration = packet.duration or 0
        if duration >= WRAPPED_DURATION:
            duration = 0  # FFmpeg's Ogg demuxer: an end trim past a packet's start, wrapped
        end = stamp + duration
        self.first = stamp if self.first is None else min(self.first, stamp)
        self.last = end if self.last is None else max(self.last, end)

    @property
    def layout(self) -> tuple[str, str, int, int]:
        return self.kind, self.codec, self.width, self.height

    @property
    def seconds(self) -> float:
        if self.first is None or self.last is None or self.time_base is None:
            return 0.0
        return float((self.last - self.first) * self.time_base)


def _codec_id(stream: av.stream.Stream) -> str:
    """The stream's codec by FFmpeg's name for it ("av1", "mp3"), whichever decoder
    PyAV chose ("libdav1d", "mp3float")."""
    context = stream.codec_context
    return str(context.codec.canonical_name) if context is not None else ""


def _tally(stream: av.stream.Stream) -> Tally:
    context = stream.codec_context
    width = int(getattr(context, "width", 0) or 0) if stream.type == "video" else 0
    height = int(getattr(context, "height", 0) or 0) if stream.type == "video" else 0
    return Tally(stream.type, context.name if context else "", width, height)


class _Queued:
    """The result's pieces, handed from the muxer to the readback without a copy, as a
    file object for PyAV (not seekable, so the demuxer reads forward, as a player receiving
    a stream would)."""

    def __init__(self) -> None:
        self.pieces: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_PIECES)
        self._rest = b""
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        if not self._rest and not self._ended:
            piece = self.pieces.get()
            self._ended = piece is None
            self._rest = piece or b""
        size = len(self._rest) if size < 0 else size
        data, self._rest = self._rest[:size], self._rest[size:]
        return data

    def drain(self) -> None:
        """Takes every piece until the end, so the muxer never waits on a reader that
        stopped."""
        while not self._ended:
            self._ended = self.pieces.get() is None


class Readback:
    """Demuxes the result as it is written, in a thread of the worker: counts each
    stream's packets and their span, decodes the first frames. `error` holds what went
    wrong, if anything, once `finish` has returned."""

    def __init__(self, demuxer: str, whole_audio: bool, samples: flac.Samples | None) -> None:
        self._demuxer = demuxer
        self._whole_audio = whole_audio
        self.samples = samples  # what the sound decodes to, hashed (a FLAC's: flac.py)
        self.tallies: list[Tally] = []
        self.records: list[bytes] = []  # each stream's, as the result's header gives it
        self.error: BaseException | None = None
        self._input = _Queued()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._read()
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            self.error = exc
        finally:
            self._input.drain()  # whatever the demuxer left unread (a trailing index)

    def _read(self) -> None:
        with av.open(
            self._input, "r", format=self._demuxer, buffer_size=IO_BUFFER, io_open=_no_io
        ) as result:
            streams = list(result.streams)
            for stream in streams:
                if stream.codec_context is not None:
                    # One decoding thread: a few frames need no more, and each thread costs
                    # address space (its stack, a malloc arena) under the worker's limit,
                    # which FFmpeg's default (one per core) would spend on a large host.
                    stream.codec_context.thread_count = 1
            self.tallies = [_tally(s) for s in streams]
            self.records = [bytes(s.codec_context.extradata or b"") for s in streams]
            decoded = [0] * len(streams)
            audio = sys.maxsize if self._whole_audio else DECODED_AUDIO_PACKETS
            limits = {"video": DECODED_VIDEO_FRAMES, "audio": audio}
            for packet in result.demux():
                if packet.size == 0:
                    continue
                index = packet.stream.index
                self.tallies[index].count(packet)
                if decoded[index] < limits.get(packet.stream.type, 0):
                    frames = packet.decode()
                    decoded[index] += max(1, len(frames))
                    self._hash(frames)
            if self.samples is not None:
                [sound] = result.streams.audio
                self._hash(sound.decode(None))  # what the decoder held back

    def _hash(self, frames: Sequence[object]) -> None:
        """Adds decoded sound to `samples`, when it is kept."""
        if self.samples is None:
            return
        for frame in frames:
            if not isinstance(frame, av.AudioFrame):
                raise MediaError("a FLAC of other than sound")
            self.samples.add(frame)

    def feed(self, data: bytes) -> None:
        self._input.pieces.put(data)

    def finish(self) -> None:
        """Ends the result and waits for the reading to end."""
        self._input.pieces.put(None)
        self._thread.join()


class _Tee:
    """The muxer's output: each piece to the relay and to the readback."""

    def __init__(self, link: channel.Result, readback: Readback) -> None:
        self._link = link
        self._readback = readback

    def write(self, data: bytes) -> int:
        self._link.write(data)
        self._readback.feed(data)
        return len(data)


@dataclass
class _Plan:
    """How one kept stream is copied."""

    output: av.stream.Stream
    tally: Tally
    codec: str  # FFmpeg's name (_codec_id)
    syntax: nal.Syntax | None
    length_size: int
    searched: bool  # packets searched by the last gate (all of them, or non-slice units)
    made_up_times: bool  # by the demuxer (an AVI): right for MPEG-4 only in frame order
    reorders: bool  # the stream's header announced B-frames
    in_avi: bool = False  # written into an AVI, under the input's fourcc (`tagged`)
    tagged: bool = False  # under one of mpegvideo.XVID_TAGS
    last_dts: int | None = None  # of the sound written into an AVI, in its time base
    dropped: int = 0  # units removed from inside the stream (SEI, user data)
    reservoir: mp3.Reservoir[av.Packet] | None = None  # MP3 sound: its ancillary bytes go

    @property
    def dropped_name(self) -> str:
        return INSIDE_NAMES[self.codec]


def _muxer_options(muxer: str) -> dict[str, str]:
    options = {"fflags": "+bitexact", "flush_packets": "0"}
    if muxer in media.MP4_MUXERS:
        options["movflags"] = "frag_keyframe+empty_moov+delay_moov+default_base_moof"
        options["frag_size"] = str(FRAGMENT_BYTES)
    elif muxer in MATROSKA_MUXERS:
        options["cluster_size_limit"] = str(FRAGMENT_BYTES)
    elif muxer == "mp3":
        options |= {"id3v2_version": "0", "write_xing": "0"}  # no tag, no encoder frame
    return options


def _duration_tag(microseconds: int) -> str:
    seconds = microseconds / 1e6
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{seconds:012.9f}"


def _plan(
    source: av.stream.Stream,
    output: av.container.OutputContainer,
    muxer: str,
    duration: int | None,
    search: gate.Search,
    made_up_times: bool,
) -> tuple[_Plan, list[str]]:
    """Adds the output stream for `source`; returns its plan (counting the units dropped
    from its configuration record) and the names of what else went from that record.
    `made_up_times`: the demuxer makes up presentation times (an AVI)."""
    # opaque: the stream is named by the decoder PyAV chose (libdav1d for AV1 has no
    # encoder to look up by its name); a remux needs only the stream's parameters.
    target = output.add_stream_from_template(source, opaque=True)
    if muxer == "avi" and source.type == "audio":
        _keep_avi_audio_rate(source, target)
    codec = _codec_id(source)
    video = source.type == "video"
    syntax = nal.SYNTAX.get(codec) if video else None
    original = bytes(source.codec_context.extradata or b"")
    extradata, dropped, names, size_bytes = original, 0, [], 0
    in_avi = muxer == "avi"
    tagged = in_avi and codec in mpegvideo.CODECS and _xvid_tagged(source)
    if codec in mpegvideo.CODECS:
        cleaned, dropped = mpegvideo.without_user_data(extradata, codec == "mpeg4", tagged)
        extradata = bytes(cleaned)
    elif codec == "av1" and extradata:
        if extradata[0] & 0x80:  # an av1C record; else bare OBUs
            extradata, dropped = obu.av1c_without_metadata(extradata)
        else:
            cleaned, dropped = obu.without_metadata(extradata)
            extradata = bytes(cleaned)
    elif syntax is not None:
        size_bytes = nal.length_size(codec, extradata)
        if syntax is nal.HEVC and size_bytes:
            extradata, dropped = nal.hvcc_without_sei(extradata)
        elif not size_bytes and extradata:
            cleaned, dropped = nal.without_sei(extradata, syntax, 0)
            extradata = bytes(cleaned)
    elif codec == "vorbis" and extradata:
        extradata, said = records.vorbis_without_comments(extradata)
        names += ["Vorbis comment header (vendor and tags)"] if said else []
    elif codec == "flac" and extradata:
        extradata, went = records.flac_streaminfo(extradata)
        names += ["FLAC metadata blocks in the stream header"] if went else []
    if extradata != original:
        target.codec_context.extradata = extradata
    search.feed(extradata, ("extradata", source.index))
    if duration and muxer in MATROSKA_MUXERS:
        # Matroska written forward only has no place for a duration found at the end: the
        # muxer writes this one in the header instead.
        target.metadata["DURATION"] = _duration_tag(duration)
    searched = not codec.startswith(RAW_AUDIO)
    reorders = bool(video and getattr(source.codec_context, "has_b_frames", 0))
    plan = _Plan(
        target,
        _tally(source),
        codec,
        syntax,
        size_bytes,
        searched,
        made_up_times,
        reorders,
        in_avi,
        tagged,
    )
    plan.dropped = dropped
    if codec == "mp3":
        plan.reservoir = mp3.Reservoir()
    return plan, names


def _copy(
    packet: av.Packet, plan: _Plan, search: gate.Search, data: bytes | memoryview | None = None
) -> av.Packet:
    """The packet to mux for `packet`: its bytes (or `data`, what the reservoir left of
    them; without SEI or user data), timing and key flag, and only the side data a player
    needs (counts in `plan` what went). Raises MediaError for MPEG-4 frames this remux
    cannot keep in order."""
    data = memoryview(packet) if data is None else data
    dropped = 0
    channel_id = ("packets", packet.stream.index)
    if plan.syntax is not None:
        data, dropped = nal.without_sei(data, plan.syntax, plan.length_size)
        for piece in nal.searchable(data, plan.syntax, plan.length_size):
            search.feed(piece, channel_id)
    else:
        if plan.codec in mpegvideo.CODECS:
            _check_order(data, plan)
            data, dropped = mpegvideo.without_user_data(data, plan.codec == "mpeg4", plan.tagged)
        elif plan.codec == "av1":
            data, dropped = obu.without_metadata(data)
        elif plan.codec == "aac":
            data, dropped = aac.without_names(data)
        elif plan.codec == "mjpeg":
            data, dropped = jpeg.rebuild_frame(bytes(data))
        if plan.searched:
            search.feed(data, channel_id)
    plan.dropped += dropped
    copy = av.Packet(data)  # type: ignore[arg-type] # any buffer, not copied; stub says bytes
    copy.pts, copy.dts, copy.duration = packet.pts, packet.dts, packet.duration
    copy.time_base = packet.time_base
    copy.is_keyframe = packet.is_keyframe
    for side_data in packet.iter_sidedata():
        if side_data.data_type in KEPT_SIDE_DATA:
            side_data.to_packet(copy)
    if plan.in_avi and packet.stream.type == "audio" and packet.dts is not None:
        _avi_audio_time(copy, packet.dts, Fraction(packet.time_base), plan)
    copy.stream = plan.output
    return copy


def _keep_avi_audio_rate(source: av.stream.Stream, target: av.stream.Stream) -> None:
    """An AVI's sound whose frames the muxer cannot count in samples (ADPCM) gets its
    time base from the header's block size and byte rate, and a byte rate in the input's
    format header that does not fit its stream header's time base (FFmpeg's ADPCM encoder
    leaves its default, 128 kbit/s) would make the result play at another rate. The byte
    rate is set from the input's time base instead (to the nearest bit per second)."""
    bit_rate = target.codec_context.bit_rate
    if not bit_rate or source.time_base is None:
        return
    with av.open(io.BytesIO(), "w", format="avi") as probe:
        probe.add_stream_from_template(source, opaque=True)
        probe.start_encoding()
        chosen = Fraction(probe.streams[0].time_base or source.time_base)
    wanted = Fraction(source.time_base)
    if chosen != wanted and chosen * bit_rate % 8 == 0:  # block size * 8 / byte rate
        block_bits = chosen * bit_rate
        target.codec_context.bit_rate = round(block_bits / wanted)


def _avi_audio_time(copy: av.Packet, dts: int, time_base: Fraction, plan: _Plan) -> None:
    """An AVI's sound in the time base its muxer chose (from the header's byte rate, which
    may not be the input's): the input's time rescaled, one tick after the last if it
    rounds onto it, as the ffmpeg CLI does when it copies such a stream."""
    target = Fraction(plan.output.time_base or time_base)
    stamp = int(dts * time_base / target + Fraction(1, 2))
    if plan.last_dts is not None and stamp <= plan.last_dts:
        stamp = plan.last_dts + 1
    plan.last_dts = stamp
    copy.time_base = target
    copy.pts = copy.dts = stamp
    copy.duration = 0


def _check_order(data: bytes | memoryview, plan: _Plan) -> None:
    """An MPEG-4 packet must hold one frame (unless it stays in an AVI: only there does a
    player expect DivX's packed B-frames), and, where the demuxer makes up the times, a
    B-frame only if the header announced them. Raises MediaError otherwise."""
    if plan.codec != "mpeg4" or plan.in_avi:
        return
    types = mpegvideo.vop_types(data)
    if len(types) > 1:
        raise MediaError("packed B-frames")
    if plan.made_up_times and not plan.reorders and mpegvideo.B_VOP in types:
        raise MediaError("B-frames the header did not announce")


def clean(
    mime: str, source: BinaryIO | channel.RemoteInput, link: channel.Result
) -> dict[str, Any]:
    """Remuxes one video from `source` into `link`; returns the worker's answer. An AVI
    that cannot become Matroska, or a WAV of other than raw samples, is written in its own
    format, muxed twice (`_twice`)."""
    try:
        return _clean(mime, source, link, own_format=False)
    except NotStreamable:
        source.seek(0)  # nothing was written
        return _clean(mime, source, link, own_format=True)


def _open(
    reader: BinaryIO | channel.SeekableInput, demuxer: str, options: dict[str, str] | None = None
) -> Any:
    """The input, demuxed by `demuxer` (forced), opening nothing else."""
    return av.open(
        reader, "r", format=demuxer, options=options or {}, buffer_size=INPUT_BUFFER, io_open=_no_io
    )


def _clean(
    mime: str, source: BinaryIO | channel.RemoteInput, link: channel.Result, own_format: bool
) -> dict[str, Any]:
    """As `clean`; `own_format`: an AVI stays an AVI, a WAV is remuxed (not only its raw
    samples copied), both muxed twice. Raises NotStreamable when not `own_format`, before
    anything is written, for a file that needs it."""
    formats = media.FORMATS[mime]  # demuxer, muxer, type of the result, audio only
    whole: dict[str, Any] | None = None  # the tags of an MP3, read from the whole file
    cut: list[str] = []
    reader: BinaryIO | channel.SeekableInput = source
    if formats[0] == "mp3":
        whole, reader, cut = _mp3_frames(source)
    rewrapped = formats[0] in WRITTEN_AS and not own_format
    options = DEMUXER_OPTIONS.get(formats[0], {}) if rewrapped else {}
    with _open(reader, formats[0], options) as container:
        document = whole if whole is not None else _document(container)
        pictures = av.stream.Disposition.attached_pic
        video = [s for s in container.streams.video if not s.disposition & pictures]
        audio = list(container.streams.audio)
        if rewrapped:
            context = [s.codec_context for s in video]
            if any(c.has_b_frames and c.name not in REORDERED_BY_ONE for c in context):
                raise NotStreamable(mime)
            formats = (formats[0], *WRITTEN_AS[formats[0]], formats[3])
        if not video:
            formats = media.audio_only_formats(formats)
        _, muxer, out_mime, _ = formats
        if not (video or audio):
            return {"ok": False, "reason": "malformed"}  # a shell: metadata, no media
        kept = video + audio
        if not all(media.codec_kept(s.type, _codec_id(s)) for s in kept):
            return {"ok": False, "reason": "unsupported"}  # nothing written yet
        declared = container.duration
        names = media.removed_names(document, audio_only=not video) + cut
        search = gate.Search(media.tag_values(document))
        hashed = flac.Samples() if muxer == "flac" else None
        readback = Readback(media.readback_demuxer(muxer), not video, hashed)
        tee = _Tee(link, readback)
        try:
            if muxer == "wav" and not own_format:
                tallies, inside = _copy_wav(container, kept, tee, source), []
            elif muxer == "flac":
                tally, record, samples, final = _flac(container, reader, formats[0], kept, tee)
                tallies, inside = [tally], [flac.ENCODER_NAME]
            else:
                if own_format:

                    def again(
                        c: av.container.InputContainer, s: list[Stream], out: Sink, last: bool
                    ) -> list[_Plan]:
                        # The first pass searches nothing and names nothing: it only learns
                        # what the muxer writes over.
                        went = names if last else []
                        found = search if last else gate.Search(set())
                        return _remux(c, s, muxer, out, found, went, made_up_times=False)

                    plans = _twice(container, reader, formats[0], kept, tee, again)
                else:
                    plans = _remux(container, kept, muxer, tee, search, names, rewrapped)
                tallies = [plan.tally for plan in plans]
                inside = [plan.dropped_name for plan in plans if plan.dropped]
        except Exception as exc:
            if (rewrapped or muxer == "wav") and not own_format and not link.written:
                if not isinstance(exc, CutShort):
                    # Nothing went out yet (Matroska refused a codec its muxer does not
                    # list, the first packets showed frames it cannot keep in order, a
                    # WAV's sound is not raw samples): the file's own muxer, run twice,
                    # may still take it. A file cut short is refused here: the other way
                    # would only find the same.
                    raise NotStreamable(mime) from exc
            raise
        finally:
            readback.finish()
    if readback.error is not None:
        raise MediaError("the result does not read back") from readback.error
    if formats[0] == "ogg":
        last_page = max(t.position for t in tallies)
        if ogg.ends_inside_a_page(source, last_page, source.seek(0, io.SEEK_END)):
            raise CutShort("the file ends inside a page")
    _compare(tallies, readback.tallies, declared)
    if hashed is not None:
        flac.check(record, samples, readback.records[0], final, hashed)
    if muxer == "mp3" and sum(t.packets for t in tallies) < MP3_MIN_FRAMES:
        return {"ok": False, "reason": "malformed"}  # too short for a player to recognise
    if search.found:
        return {"ok": False, "reason": "malformed"}  # metadata inside the stream itself
    names += list(dict.fromkeys(inside))
    return {"ok": True, "mime": out_mime, "removed": names, "note": ""}


Sink = _Tee | rewrites.Recorder | rewrites.Overlay  # where a muxer writes
_Done = TypeVar("_Done")


def _twice(
    container: av.container.InputContainer,
    reader: BinaryIO | channel.SeekableInput,
    demuxer: str,
    kept: Sequence[av.stream.Stream],
    tee: _Tee,
    write: Callable[[av.container.InputContainer, list[av.stream.Stream], Sink, bool], _Done],
) -> _Done:
    """Runs `write` (a remux, an encoding) twice, for a muxer that goes back over what it
    wrote (rewrites.py): first into a recorder, from `container`, then again from the
    start of `reader`, into `tee`, with what the first pass wrote over already in place.
    `write`'s last argument says whether this is the second pass, whose result it returns.
    Raises RewriteError if the passes differ."""
    first = rewrites.Recorder()
    write(container, list(kept), first, False)
    reader.seek(0)
    with _open(reader, demuxer) as again:
        overlay = rewrites.Overlay(tee.write, first)
        done = write(again, [again.streams[s.index] for s in kept], overlay, True)
        overlay.finish()
    return done


def _flac(
    container: av.container.InputContainer,
    reader: BinaryIO | channel.SeekableInput,
    demuxer: str,
    kept: Sequence[av.stream.Stream],
    tee: _Tee,
) -> tuple[Tally, bytes, flac.Samples, bytes]:
    """A FLAC encoded once where the input's STREAMINFO gives what the muxer writes last
    (flac.up_front: sent in place of the muxer's zeros; what it writes back at the end is
    not sent, and flac.check compares it), else twice (`_twice`). Returns as `_reencode`."""
    [source] = kept
    known = flac.up_front(bytes(source.codec_context.extradata or b""))
    if known is None:
        return _twice(container, reader, demuxer, kept, tee, _reencode)
    overlay = rewrites.Overlay(tee.write, rewrites.Recorder.known(known))
    done = _reencode(container, list(kept), overlay, last=True)
    flac.wrote_back(overlay.rewrites)
    return done


def _reencode(
    container: av.container.InputContainer, kept: list[av.stream.Stream], sink: Sink, last: bool
) -> tuple[Tally, bytes, flac.Samples, bytes]:
    """Decodes a FLAC's one stream and encodes it again into `sink` (flac.py); returns what
    the result holds, the input's record (its STREAMINFO), the input's samples, hashed in
    the `last` pass only (the first only learns what the muxer writes over), and the
    STREAMINFO the encoder ended with (b"" if it gave none)."""
    [source] = kept
    if not isinstance(source, AudioStream):
        raise MediaError("a FLAC of other than sound")
    samples = flac.Samples()
    with av.open(
        sink, "w", format="flac", options=_muxer_options("flac"), buffer_size=IO_BUFFER
    ) as output:
        target = flac.add_encoder(source, output)
        tally, final = _tally(source), b""
        for packet in flac.encoded(container, source, target, samples if last else None):
            if packet.size:
                tally.count(packet)
            else:  # the last carries only STREAMINFO's totals, for the muxer
                final = flac.totals(packet) or final
            output.mux(packet)
    return tally, bytes(source.codec_context.extradata or b""), samples, final


def _mp3_frames(
    source: BinaryIO | channel.RemoteInput,
) -> tuple[dict[str, Any], mp3.Window, list[str]]:
    """An MP3's tags as FFmpeg's demuxer reads them from the whole file (for the report and
    the last gate), a view of the file that holds only its frames, and the names of what
    lies outside that view (mp3.py). Raises mp3.TagError."""
    size = source.seek(0, io.SEEK_END)
    source.seek(0)
    with _open(source, "mp3") as whole:
        document = _document(whole)
    start, end, names = mp3.audio_span(source, size)
    if mp3.encoder_frame(source, start):
        names.append(mp3.ENCODER_FRAME_NAME)
    source.seek(0)
    return document, mp3.Window(source, start, end), names


def _copy_wav(
    container: av.container.InputContainer,
    kept: Sequence[av.stream.Stream],
    tee: _Tee,
    source: BinaryIO | channel.RemoteInput,
) -> list[Tally]:
    """Writes a WAV of the input's raw samples: the demuxer reads them twice, first to
    count their bytes for the header (wave.py), then to send them after it. Returns what
    the second reading held. Raises wave.Unwritable before writing anything for sound that
    is not raw samples (a compressed stream would need a fact chunk written last; raw
    samples are not searched by the last gate, RAW_AUDIO) or does not fit a WAV's sizes."""
    if len(kept) != 1 or not kept[0].codec_context.name.startswith(RAW_AUDIO):
        raise wave.Unwritable("not one stream of raw samples")
    size = sum(packet.size for packet in container.demux(kept[0]))
    source.seek(0)
    with _open(source, "wav") as again:
        [stream] = again.streams.audio
        tee.write(wave.header(stream, size))
        tally, written, pending = _tally(stream), 0, bytearray()
        for packet in again.demux(stream):
            if packet.size == 0:
                continue
            tally.count(packet)
            written += packet.size
            pending += memoryview(packet)
            if len(pending) >= IO_BUFFER:
                tee.write(bytes(pending))
                pending.clear()
        if written != size:
            raise MediaError("the sound changed between two readings")
        tee.write(bytes(pending) + b"\0" * (size & 1))  # a RIFF chunk ends on an even byte
    return [tally]


def _remux(
    container: av.container.InputContainer,
    kept: Sequence[av.stream.Stream],
    muxer: str,
    tee: Sink,
    search: gate.Search,
    names: list[str],
    made_up_times: bool,
) -> list[_Plan]:
    """Copies the kept streams' packets into a new container written to `tee`; returns
    the plan of each kept input stream (what it held, what went from inside it), and adds
    to `names` what went from the streams' configuration records. Where the demuxer makes
    up times (an AVI), the first PEEKED_PACKETS packets are all checked before the first
    is muxed: the muxer writes nothing before that."""
    with av.open(
        tee, "w", format=muxer, options=_muxer_options(muxer), buffer_size=IO_BUFFER
    ) as output:
        plans: dict[int, _Plan] = {}
        for stream in kept:
            plan, went = _plan(stream, output, muxer, container.duration, search, made_up_times)
            plans[stream.index] = plan
            names += [name for name in went if name not in names]
        if muxer == "avi":
            output.start_encoding()  # the header: the muxer chooses the time bases
        held: list[av.Packet] | None = [] if made_up_times else None

        def send(copy: av.Packet) -> None:
            nonlocal held
            if held is None:
                output.mux(copy)
                return
            held.append(copy)
            if len(held) == PEEKED_PACKETS:
                for waiting in held:
                    output.mux(waiting)
                held = None

        for packet in container.demux(kept):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker
            plan = plans[packet.stream.index]
            if packet.is_corrupt:
                raise CutShort("an incomplete frame")
            plan.tally.count(packet)
            if plan.reservoir is None:
                send(_copy(packet, plan, search))
                continue
            for data, ready in plan.reservoir.push(bytes(packet), packet):
                send(_copy(ready, plan, search, data))
        for plan in plans.values():
            if plan.reservoir is not None:
                for data, ready in plan.reservoir.finish():
                    send(_copy(ready, plan, search, data))
                plan.dropped = plan.reservoir.zeroed
        for waiting in held or ():
            output.mux(waiting)
    return [plans[s.index] for s in kept]


def _compare(sources: list[Tally], results: list[Tally], declared: int | None) -> None:
    """The result must hold what was kept of the input. Raises MediaError otherwise."""
    if [t.layout for t in results] != [t.layout for t in sources]:
        raise MediaError("streams differ")
    if [t.packets for t in results] != [t.packets for t in sources]:
        raise MediaError("packets lost")
    seconds = max(t.seconds for t in results)
    if seconds <= 0:
        raise MediaError("no duration")
    if declared and declared > 0:
        expected = declared / 1e6
        if abs(seconds - expected) > max(0.25, expected * 0.02):
            raise MediaError("duration differs")


def _xvid_tagged(stream: av.stream.Stream) -> bool:
    """Whether an AVI's stream is kept under a fourcc for which FFmpeg assumes Xvid when
    the stream names no encoder (mpegvideo.XVID_TAGS)."""
    try:
        return stream.codec_context.codec_tag in mpegvideo.XVID_TAGS
    except UnicodeDecodeError:  # PyAV reads the fourcc as ASCII
        return False
